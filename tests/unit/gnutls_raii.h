// RAII owners for the GnuTLS handles the unit tests make certificates with.
#pragma once

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <memory>
#include <string>
#include <type_traits>

namespace testutil {

template <auto Fn>
struct Deleter {
    template <class T>
    void operator()(T* p) const {
        Fn(p);
    }
};
using PrivkeyPtr = std::unique_ptr<std::remove_pointer_t<gnutls_x509_privkey_t>,
                                   Deleter<gnutls_x509_privkey_deinit>>;
using CrtPtr =
    std::unique_ptr<std::remove_pointer_t<gnutls_x509_crt_t>, Deleter<gnutls_x509_crt_deinit>>;
using AbsPrivkeyPtr =
    std::unique_ptr<std::remove_pointer_t<gnutls_privkey_t>, Deleter<gnutls_privkey_deinit>>;
using PubkeyPtr =
    std::unique_ptr<std::remove_pointer_t<gnutls_pubkey_t>, Deleter<gnutls_pubkey_deinit>>;

// Owns the buffer of a gnutls_*_export2 result.
struct Datum {
    gnutls_datum_t d{nullptr, 0};
    Datum() = default;
    Datum(const Datum&) = delete;
    Datum& operator=(const Datum&) = delete;
    ~Datum() { gnutls_free(d.data); }
    std::string str() const { return std::string(reinterpret_cast<const char*>(d.data), d.size); }
};

}  // namespace testutil

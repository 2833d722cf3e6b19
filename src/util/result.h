// Result<T>: a value or an error message, the error-as-value type used inside the
// project (exceptions are only thrown and caught at the edges: mains and parsers of
// third-party libraries that throw).
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace tlspolicy {

// An error: a short human-readable message, safe to print (no raw untrusted bytes).
struct Error {
    std::string message;
};

inline Error make_error(std::string message) {
    return Error{std::move(message)};
}

// Holds either a T or an Error. ok() tells which; value()/error() require the matching state.
template <typename T>
class [[nodiscard]] Result {
  public:
    Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
    Result(Error err) : v_(std::in_place_index<1>, std::move(err)) {}

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

    const Error& error() const { return std::get<1>(v_); }

  private:
    std::variant<T, Error> v_;
};

// Result<void>: success or an Error.
template <>
class [[nodiscard]] Result<void> {
  public:
    Result() = default;
    Result(Error err) : err_(std::move(err)), failed_(true) {}

    bool ok() const { return !failed_; }
    explicit operator bool() const { return ok(); }
    const Error& error() const { return err_; }

  private:
    Error err_;
    bool failed_ = false;
};

using Status = Result<void>;

}  // namespace tlspolicy

#!/usr/bin/env node
// Prints mailauth's verdicts on the MTA-STS differential corpus as one JSON object:
//
//   node mailauth-verdicts.js <mailauth install dir> <corpus dir>
//
//   {"mailauth": "7.1.0",
//    "lax":    {"policy": {...}, "txt": {...}, "mx": {...}},   mailauth's default options
//    "strict": {"policy": {...}, "txt": {...}, "mx": {...}}}   {strict: true}
//
//   policy[name] = {"ok": bool, "code": str|null, "mode": str|null, "max_age": num|null, "mx": [str]}
//   txt[id]      = {"found": bool, "id": str|null, "code": str|null}
//   mx[id]       = bool
//
// policy: parsePolicy(<file bytes as a Buffer>, opts), as fetchPolicy hands it the body.
// txt:    resolvePolicy('example.com', {resolver, ...opts}) with a resolver that answers the
//         case's TXT records; it returns the id, false, or throws multi_sts_records. When it
//         returns false, the reason (sts_record_not_found | invalid_sts_record) is read from
//         getPolicy() with a still-valid cached policy, which hands the discovery reason back
//         as the cached policy's error code (mailauth keeps that reason internal otherwise).
// mx:     validateMx(host, {mode: 'enforce', mx: [pattern]}).valid (for mode testing/none
//         validateMx answers true without looking at the patterns).
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const [mailauthDir, corpusDir] = process.argv.slice(2);
if (!mailauthDir || !corpusDir) {
    console.error('usage: mailauth-verdicts.js <mailauth install dir> <corpus dir>');
    process.exit(2);
}

const version = require(path.join(mailauthDir, 'node_modules', 'mailauth', 'package.json')).version;
const sts = require(path.join(mailauthDir, 'node_modules', 'mailauth', 'lib', 'mta-sts.js'));

const DOMAIN = 'example.com';

const notFound = () => {
    let err = new Error('not found');
    err.code = 'ENOTFOUND';
    return err;
};

// Answers TXT for _mta-sts.example.com with the case's records; everything else is NXDOMAIN,
// so getPolicy never leaves the process (the policy host has no address).
const resolverFor = records => async (name, type) => {
    if (type === 'TXT' && name === `_mta-sts.${DOMAIN}`) {
        return records.map(strings => strings.slice());
    }
    throw notFound();
};

const policyVerdict = (body, opts) => {
    try {
        let p = sts.parsePolicy(body, opts);
        return {
            ok: true,
            code: null,
            mode: p.mode === undefined ? null : p.mode,
            max_age: p.maxAge === undefined ? null : p.maxAge,
            mx: p.mx || []
        };
    } catch (err) {
        return { ok: false, code: err.code || `exception: ${err.message}`, mode: null, max_age: null, mx: [] };
    }
};

// An id that no record can carry (fields are split on ";"), so getPolicy never reports "renewed".
const CACHED_ID = 'cached;never-in-a-record';

const discoveryReason = async (records, opts) => {
    let known = {
        id: CACHED_ID,
        mode: 'enforce',
        mx: ['cached.example.com'],
        maxAge: 86400,
        expires: new Date(Date.now() + 86400 * 1000).toISOString()
    };
    let res = await sts.getPolicy(DOMAIN, known, Object.assign({ resolver: resolverFor(records) }, opts));
    if (res.status !== 'errored' || !res.policy || !res.policy.error) {
        throw new Error(`getPolicy answered ${res.status} without an error`);
    }
    return res.policy.error.code;
};

const txtVerdict = async (records, opts) => {
    let id;
    try {
        id = await sts.resolvePolicy(DOMAIN, Object.assign({ resolver: resolverFor(records) }, opts));
    } catch (err) {
        return { found: false, id: null, code: err.code || `exception: ${err.message}` };
    }
    let reason = await discoveryReason(records, opts);
    if (id) {
        // getPolicy went on to fetch the policy and found no policy host: a consistent answer
        if (reason !== 'policy_host_not_found') {
            throw new Error(`resolvePolicy found id ${id} but getPolicy says ${reason}`);
        }
        return { found: true, id, code: null };
    }
    if (reason !== 'sts_record_not_found' && reason !== 'invalid_sts_record') {
        throw new Error(`resolvePolicy found nothing but getPolicy says ${reason}`);
    }
    return { found: false, id: null, code: reason };
};

const mxVerdict = (pattern, host) => !!sts.validateMx(host, { mode: 'enforce', mx: [pattern] }).valid;

const readCases = file => {
    let data = JSON.parse(fs.readFileSync(path.join(corpusDir, file), 'utf-8'));
    if (!data || !Array.isArray(data.cases)) {
        throw new Error(`${file}: no "cases" list`);
    }
    return data.cases;
};

const main = async () => {
    let policyDir = path.join(corpusDir, 'policies');
    let policies = fs
        .readdirSync(policyDir)
        .filter(name => name.endsWith('.txt'))
        .sort()
        .map(name => [name.slice(0, -4), fs.readFileSync(path.join(policyDir, name))]);
    let txtCases = readCases('txt.json');
    let mxCases = readCases('mx.json');

    let out = { mailauth: version };
    for (let [modeName, opts] of [
        ['lax', {}],
        ['strict', { strict: true }]
    ]) {
        let verdicts = { policy: {}, txt: {}, mx: {} };
        for (let [name, body] of policies) {
            verdicts.policy[name] = policyVerdict(body, opts);
        }
        for (let c of txtCases) {
            verdicts.txt[c.id] = await txtVerdict(c.records, opts);
        }
        for (let c of mxCases) {
            verdicts.mx[c.id] = mxVerdict(c.pattern, c.host);
        }
        out[modeName] = verdicts;
    }
    process.stdout.write(JSON.stringify(out) + '\n');
};

main().catch(err => {
    console.error(`mailauth-verdicts: ${err.stack || err}`);
    process.exit(1);
});

#!/usr/bin/env python3
"""The MTA-STS differential test: tlspolicyd's parsers against mailauth, case by case.

Runs mailauth-verdicts.js (mailauth, in its default "lax" options and with {strict: true})
and sts_verdicts (our parse_sts_policy, parse_sts_txt, sts_mx_matches) on the corpus in
corpus/, compares the normalised verdicts, and fails on

  - every disagreement not listed in known-differences.toml,
  - every listed difference that no longer differs, or now differs in another way (stale),
  - an empty corpus, a missing or wrong mailauth install (see install-mailauth.sh).

  python3 tests/diff/compare.py --ours BUILD/tests/diff/sts_verdicts [--stubs]

Normalised verdicts (what is compared, and how each is rendered in known-differences.toml):

  policy  "accepted mode=<mode> max_age=<n> mx=<patterns>" or "rejected <code>".
          mx patterns are compared lower-cased with duplicates dropped (first occurrence
          kept): mailauth stores them that way, we keep them verbatim and lower-case and
          de-duplicate them later (sts_match_list); matching is case-insensitive either way.
          Codes: both sides use mailauth's vocabulary (invalid_sts_version, invalid_sts_mode,
          invalid_sts_max_age, invalid_sts_mx) and are compared exactly; our extra code
          invalid_sts_body (not text, or over 64 KiB) has no counterpart in parsePolicy, so
          a rejection with it only has to be a rejection.
  txt     "found id=<id>" or "rejected <code>". Codes are compared by class:
            none:    ours no_sts_record       mailauth sts_record_not_found
            multi:   ours multi_sts_records   mailauth multi_sts_records (thrown)
            invalid: ours invalid_sts_record, mailauth invalid_sts_record
                     ours invalid_sts_id
          (resolvePolicy itself only answers false for none and invalid; mailauth-verdicts.js
          reads the reason back through getPolicy.)
  mx      "match" or "no match" (validateMx with mode enforce).

Every mailauth verdict exists twice, once per mailauth mode; a known difference names the
mode it holds for ("lax", "strict" or "both").
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MAILAUTH_DIR = '/var/cache/tlspolicyd-test/mailauth'
MODES = ('lax', 'strict')
ID_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')
INSTALL_HINT = 'run tests/diff/install-mailauth.sh (scripts/deps.sh does)'

TXT_CLASS = {
    'no_sts_record': 'none',
    'sts_record_not_found': 'none',
    'multi_sts_records': 'multi',
    'invalid_sts_record': 'invalid',
    'invalid_sts_id': 'invalid',
}
# Our policy codes with no counterpart in mailauth's parsePolicy: only "rejected" is compared.
OURS_ONLY_POLICY_CODES = {'invalid_sts_body'}


class Failure(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Corpus

def load_corpus(corpus_dir):
    policy_dir = os.path.join(corpus_dir, 'policies')
    if not os.path.isdir(policy_dir):
        raise Failure(f'corpus: {policy_dir} is missing')
    policies = {}
    for name in sorted(os.listdir(policy_dir)):
        if name.endswith('.txt'):
            case = name[:-4]
            if not ID_RE.match(case):
                raise Failure(f'corpus: bad policy file name {name!r}')
            with open(os.path.join(policy_dir, name), 'rb') as f:
                policies[case] = f.read()

    def cases(file, fields):
        path = os.path.join(corpus_dir, file)
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise Failure(f'corpus: cannot read {path}: {e}')
        out = {}
        for c in data.get('cases', []):
            cid = c.get('id')
            if not isinstance(cid, str) or not ID_RE.match(cid) or cid in out:
                raise Failure(f'corpus: {file}: bad or repeated id {cid!r}')
            for field, kind in fields.items():
                if not isinstance(c.get(field), kind):
                    raise Failure(f'corpus: {file}: {cid}: "{field}" missing or not a {kind.__name__}')
            out[cid] = c
        return out

    txt = cases('txt.json', {'records': list})
    for cid, c in txt.items():
        if not all(isinstance(r, list) and all(isinstance(s, str) for s in r) for r in c['records']):
            raise Failure(f'corpus: txt.json: {cid}: records must be lists of strings')
    mx = cases('mx.json', {'pattern': str, 'host': str})
    for what, got in (('policies/*.txt', policies), ('txt.json', txt), ('mx.json', mx)):
        if not got:
            raise Failure(f'corpus: {what} holds no cases: the differential test would prove nothing')
    return policies, txt, mx


# ---------------------------------------------------------------------------------------------
# Running both sides

def pinned_version(lock_path):
    with open(lock_path, encoding='utf-8') as f:
        return json.load(f)['packages']['node_modules/mailauth']['version']


def run_mailauth(args, want_version):
    node = args.node or shutil.which('node')
    if not node:
        raise Failure(f'node is not installed; mailauth needs Node >= 20 ({INSTALL_HINT})')
    pkg = os.path.join(args.mailauth_dir, 'node_modules', 'mailauth', 'package.json')
    try:
        with open(pkg, encoding='utf-8') as f:
            have = json.load(f)['version']
    except (OSError, ValueError, KeyError):
        raise Failure(f'mailauth is not installed in {args.mailauth_dir}: {INSTALL_HINT}')
    if have != want_version:
        raise Failure(f'{args.mailauth_dir} holds mailauth {have}, the lock pins {want_version}: '
                      f'{INSTALL_HINT}')
    proc = subprocess.run([node, args.mailauth_script, args.mailauth_dir, args.corpus],
                          capture_output=True, timeout=100)
    if proc.returncode != 0:
        raise Failure('mailauth-verdicts.js failed:\n' + proc.stderr.decode(errors='replace'))
    out = json.loads(proc.stdout)
    if out.get('mailauth') != want_version:
        raise Failure(f'mailauth-verdicts.js ran mailauth {out.get("mailauth")}, want {want_version}')
    return out


def hx(b):
    return 'x' + b.hex()


def from_json_bytes(s):
    """Our JSON escapes every byte >= 0x80 as \\u00XX: turn such a string back into text the
    way mailauth sees the same bytes (Buffer.toString: UTF-8, bad sequences as U+FFFD)."""
    if isinstance(s, str) and any(ord(c) > 0x7f for c in s) and all(ord(c) < 0x100 for c in s):
        return s.encode('latin-1').decode('utf-8', errors='replace')
    return s


def run_ours(args, policies, txt, mx):
    if not args.ours or not os.access(args.ours, os.X_OK):
        raise Failure(f'sts_verdicts not found at {args.ours!r} (build it: ninja -C <build dir>)')
    lines = []
    for case, body in policies.items():
        lines.append(f'policy {case} {hx(body)}')
    for case, c in txt.items():
        # the resolver's job: each record's character-strings joined without spaces (§3.1)
        recs = ' '.join(hx(''.join(r).encode()) for r in c['records'])
        lines.append(f'txt {case} {recs}'.rstrip())
    for case, c in mx.items():
        lines.append(f'mx {case} {hx(c["pattern"].encode())} {hx(c["host"].encode())}')
    proc = subprocess.run([args.ours], input=('\n'.join(lines) + '\n').encode(),
                          capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise Failure(f'sts_verdicts exited with {proc.returncode}:\n'
                      + proc.stderr.decode(errors='replace'))
    out = json.loads(proc.stdout)
    for v in out.get('policy', {}).values():
        if isinstance(v, dict):
            v['mx'] = [from_json_bytes(p) for p in v.get('mx') or []]
            v['code'] = from_json_bytes(v.get('code'))
    for v in out.get('txt', {}).values():
        if isinstance(v, dict):
            v['id'] = from_json_bytes(v.get('id'))
    return out


# ---------------------------------------------------------------------------------------------
# Normalised verdicts

def norm_mx_list(patterns):
    seen, out = set(), []
    for p in patterns:
        p = p.lower()
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def fmt_number(n):
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    return str(n)


def render_policy(v):
    if not v['ok']:
        return f'rejected {v["code"]}'
    mx = norm_mx_list(v['mx'])
    shown = ','.join(mx) if len(mx) <= 4 else ','.join(mx[:2]) + f',...({len(mx)} patterns)'
    return f'accepted mode={v["mode"]} max_age={fmt_number(v["max_age"])} mx={shown}'


def same_policy(ours, theirs):
    if ours['ok'] != theirs['ok']:
        return False
    if not ours['ok']:
        if ours['code'] in OURS_ONLY_POLICY_CODES:
            return True
        return ours['code'] == theirs['code']
    return (ours['mode'] == theirs['mode']
            and ours['max_age'] == theirs['max_age']
            and norm_mx_list(ours['mx']) == norm_mx_list(theirs['mx']))


def render_txt(v):
    return f'found id={v["id"]}' if v['found'] else f'rejected {v["code"]}'


def same_txt(ours, theirs):
    if ours['found'] != theirs['found']:
        return False
    if ours['found']:
        return ours['id'] == theirs['id']
    return TXT_CLASS.get(ours['code'], ours['code']) == TXT_CLASS.get(theirs['code'], theirs['code'])


def render_mx(v):
    return 'match' if v else 'no match'


KINDS = {
    'policy': (same_policy, render_policy),
    'txt': (same_txt, render_txt),
    'mx': (lambda a, b: a == b, render_mx),
}


def differences(ours, mailauth, corpus_ids):
    """{(case, mode): (mailauth rendering, our rendering)} for every disagreement."""
    diffs = {}
    for kind, ids in corpus_ids.items():
        same, render = KINDS[kind]
        mine = ours.get(kind, {})
        if set(mine) != set(ids):
            raise Failure(f'sts_verdicts answered {kind} cases {sorted(set(mine) ^ set(ids))} wrongly')
        for mode in MODES:
            theirs = mailauth[mode].get(kind, {})
            if set(theirs) != set(ids):
                raise Failure(f'mailauth-verdicts.js ({mode}) answered {kind} cases '
                              f'{sorted(set(theirs) ^ set(ids))} wrongly')
            for case in ids:
                if not same(mine[case], theirs[case]):
                    diffs[(f'{kind}/{case}', mode)] = (render(theirs[case]), render(mine[case]))
    return diffs


# ---------------------------------------------------------------------------------------------
# Known differences

def load_known(path, corpus_ids):
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        raise Failure('compare.py needs Python >= 3.11 (tomllib) to read known-differences.toml')
    with open(path, 'rb') as f:
        data = tomllib.load(f)
    known, problems = {}, []
    all_cases = {f'{k}/{c}' for k, ids in corpus_ids.items() for c in ids}
    for i, e in enumerate(data.get('difference', []), 1):
        where = f'known-differences.toml entry {i} ({e.get("case", "?")})'
        missing = [k for k in ('case', 'mailauth_mode', 'mailauth', 'ours', 'why')
                   if not isinstance(e.get(k), str) or not e[k].strip()]
        if missing:
            problems.append(f'{where}: missing {", ".join(missing)}')
            continue
        if e['case'] not in all_cases:
            problems.append(f'{where}: no such case in the corpus (stale)')
            continue
        if e['mailauth_mode'] not in ('lax', 'strict', 'both'):
            problems.append(f'{where}: mailauth_mode must be "lax", "strict" or "both"')
            continue
        for mode in (MODES if e['mailauth_mode'] == 'both' else (e['mailauth_mode'],)):
            if (e['case'], mode) in known:
                problems.append(f'{where}: listed twice for mailauth mode {mode}')
            known[(e['case'], mode)] = e
    return known, problems


def stub(case, mode, mailauth, ours):
    return (f'[[difference]]\ncase = {json.dumps(case)}\nmailauth_mode = "{mode}"\n'
            f'mailauth = {json.dumps(mailauth, ensure_ascii=False)}\n'
            f'ours = {json.dumps(ours, ensure_ascii=False)}\nwhy = "RFC 8461 §?: TODO"\n')


def stubs_for(unlisted):
    """Merges the lax and strict halves of a case into one "both" stub when they agree."""
    out, done = [], set()
    for (case, mode), (theirs, mine) in sorted(unlisted.items()):
        if (case, mode) in done:
            continue
        other = (case, 'strict' if mode == 'lax' else 'lax')
        if unlisted.get(other) == (theirs, mine):
            done.add(other)
            mode = 'both'
        out.append(stub(case, mode, theirs, mine))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--ours', default=os.environ.get('STS_VERDICTS'),
                    help='the sts_verdicts executable (env STS_VERDICTS)')
    ap.add_argument('--corpus', default=os.path.join(HERE, 'corpus'))
    ap.add_argument('--known', default=os.path.join(HERE, 'known-differences.toml'))
    ap.add_argument('--mailauth-script', default=os.path.join(HERE, 'mailauth-verdicts.js'))
    ap.add_argument('--lock', default=os.path.join(HERE, 'package-lock.json'))
    ap.add_argument('--mailauth-dir', default=os.environ.get('MAILAUTH_DIR', DEFAULT_MAILAUTH_DIR),
                    help=f'where install-mailauth.sh put mailauth (env MAILAUTH_DIR, default '
                         f'{DEFAULT_MAILAUTH_DIR})')
    ap.add_argument('--node', default=os.environ.get('NODE'), help='node binary (env NODE)')
    ap.add_argument('--stubs', action='store_true',
                    help='print known-differences.toml stubs for every unlisted difference')
    ap.add_argument('--dump', metavar='DIR', help='write both sides\' raw verdicts into DIR')
    args = ap.parse_args()

    try:
        policies, txt, mx = load_corpus(args.corpus)
        corpus_ids = {'policy': list(policies), 'txt': list(txt), 'mx': list(mx)}
        mailauth = run_mailauth(args, pinned_version(args.lock))
        ours = run_ours(args, policies, txt, mx)
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            for name, data in (('mailauth.json', mailauth), ('ours.json', ours)):
                with open(os.path.join(args.dump, name), 'w', encoding='utf-8') as f:
                    json.dump(data, f, indent=1, ensure_ascii=False)
        diffs = differences(ours, mailauth, corpus_ids)
        known, problems = load_known(args.known, corpus_ids)
    except Failure as e:
        sys.stdout.flush()
        print(f'sts-differential: FAIL: {e}', file=sys.stderr)
        return 1

    unlisted = {}
    for key, (theirs, mine) in sorted(diffs.items()):
        entry = known.get(key)
        if entry is None:
            unlisted[key] = (theirs, mine)
        elif (entry['mailauth'], entry['ours']) != (theirs, mine):
            problems.append(f'{key[0]} (mailauth {key[1]}): known difference changed: now mailauth '
                            f'says "{theirs}", we say "{mine}"; the entry says mailauth '
                            f'"{entry["mailauth"]}", ours "{entry["ours"]}"')
    for key, entry in sorted(known.items()):
        if key not in diffs:
            problems.append(f'{key[0]} (mailauth {key[1]}): listed in known-differences.toml but '
                            f'both now agree (stale entry: remove it)')
    for (case, mode), (theirs, mine) in sorted(unlisted.items()):
        problems.append(f'{case} (mailauth {mode}): mailauth says "{theirs}", we say "{mine}"')

    n = len(policies), len(txt), len(mx)
    print(f'sts-differential: mailauth {mailauth["mailauth"]} (lax and strict) against ours on '
          f'{n[0]} policies, {n[1]} TXT record sets, {n[2]} mx pairs: {len(diffs)} differences, '
          f'{len(diffs) - len(unlisted)} known')
    if args.stubs and unlisted:
        print('\n# stubs for known-differences.toml (fill in "why", or fix the parser):\n')
        print('\n'.join(stubs_for(unlisted)))
    sys.stdout.flush()
    if problems:
        print(f'sts-differential: FAIL: {len(problems)} problems:', file=sys.stderr)
        for p in problems:
            print(f'  - {p}', file=sys.stderr)
        if unlisted and not args.stubs:
            print('  (compare.py --stubs prints known-differences.toml entries to start from)',
                  file=sys.stderr)
        return 1
    print('sts-differential: OK')
    return 0


if __name__ == '__main__':
    sys.exit(main())

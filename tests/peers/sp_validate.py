#!/usr/bin/env python3
"""Validate a SAML 2.0 Response the way AWS's service provider would.

Real SP check built on pysaml2 (signature verification through the xmlsec1
binary), configured like AWS sign-in:

  SP entityID  urn:amazon:webservices            (--entity)
  ACS URL      https://signin.aws.amazon.com/saml (--acs)

Usage:
  venv/bin/python sp_validate.py --idp-metadata FILE --response FILE \
      --now UNIX_EPOCH_SECONDS [--entity E] [--acs URL] [--strict-audience] [--debug]

--response is a file holding the base64 SAMLResponse exactly as POSTed.
All time checks are evaluated at --now (the process clock is pinned).

Success: one JSON object on stdout, exit 0:
  {"issuer": ..., "name_id": ..., "name_id_format": ...,
   "attributes": {name: [values...]}, "signed": "response"|"assertion"|"both"}
Failure: "sp_validate: <reason>" on stderr, exit 1.
"""

import argparse
import base64
import binascii
import calendar
import json
import logging
import shutil
import sys
import warnings

SAML_NS = "urn:oasis:names:tc:SAML:2.0:assertion"
SAMLP_NS = "urn:oasis:names:tc:SAML:2.0:protocol"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"

DEFAULT_ENTITY = "urn:amazon:webservices"
DEFAULT_ACS = "https://signin.aws.amazon.com/saml"


class Rejected(Exception):
    pass


def fail(reason):
    reason = " ".join(str(reason).split())
    if len(reason) > 600:
        reason = reason[:600] + "..."
    print(f"sp_validate: {reason}", file=sys.stderr)
    sys.stderr.flush()
    sys.exit(1)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors must exit 1, not argparse's 2
        fail(f"usage: {message}")


# ---------------------------------------------------------------------------
# Clock pinning
#
# pysaml2 7.5 reads the clock through:
#   - time.gmtime() / time.time() / time.mktime(time.gmtime())  (time_util,
#     validate, client_base, ...)  -> patched on the `time` module itself, so
#     every `time.xxx()` call site sees the pinned value;
#   - datetime.now(timezone.utc)  (time_util.time_in_a_while / a_while_ago used
#     for IssueInstant, sigver, cert) -> the `datetime` name in every loaded
#     saml2.* module is replaced by a subclass whose now()/utcnow()/today()
#     return the pinned instant (isinstance() still works for real datetimes);
#   - pyOpenSSL X509.has_expired() in sigver.active_cert (C, real clock)
#     -> active_cert is replaced by a pinned re-implementation.
# _self_check() asserts all of these agree before any validation happens.
# ---------------------------------------------------------------------------

def pin_time_module(now):
    import time

    real_gmtime = time.gmtime
    real_localtime = time.localtime

    def gmtime(secs=None):
        return real_gmtime(now if secs is None else secs)

    def localtime(secs=None):
        return real_localtime(now if secs is None else secs)

    time.time = lambda: float(now)
    time.time_ns = lambda: int(now) * 1_000_000_000
    time.gmtime = gmtime
    time.localtime = localtime


def make_pinned_datetime(now):
    import datetime as _dt

    real = _dt.datetime

    class _Meta(type):
        def __instancecheck__(cls, obj):
            return isinstance(obj, real)

        def __subclasscheck__(cls, sub):
            return issubclass(sub, real)

    class PinnedDatetime(real, metaclass=_Meta):
        @classmethod
        def now(cls, tz=None):
            return real.fromtimestamp(now, tz)

        @classmethod
        def utcnow(cls):
            return real.fromtimestamp(now, _dt.timezone.utc).replace(tzinfo=None)

        @classmethod
        def today(cls):
            return real.fromtimestamp(now)

    return PinnedDatetime


def pin_saml2_modules(now):
    import datetime as _dt

    import saml2.sigver

    pinned = make_pinned_datetime(now)
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == "saml2" or name.startswith("saml2.")):
            continue
        if getattr(mod, "datetime", None) is _dt.datetime:
            setattr(mod, "datetime", pinned)

    from OpenSSL import crypto

    def active_cert(key):
        """sigver.active_cert, but evaluated at the pinned time."""
        try:
            cert = crypto.load_certificate(crypto.FILETYPE_PEM, saml2.sigver.pem_format(key))
        except Exception:
            return False
        c = cert.to_cryptography()
        t = _dt.datetime.fromtimestamp(now, _dt.timezone.utc)
        return c.not_valid_before_utc <= t < c.not_valid_after_utc

    saml2.sigver.active_cert = active_cert


def _self_check(now):
    import datetime as _dt
    import time

    from saml2 import time_util, sigver, cert as saml2_cert

    want = _dt.datetime.fromtimestamp(now, _dt.timezone.utc)
    checks = {
        "time.time": int(time.time()) == int(now),
        "time_util.utc_now": time_util.utc_now() == int(now),
        "time_util.instant": time_util.instant() == want.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "time_util.time_in_a_while": abs((time_util.time_in_a_while() - want).total_seconds()) < 1,
        "time_util.time_a_while_ago": abs((time_util.time_a_while_ago() - want).total_seconds()) < 1,
        "sigver.datetime": abs((sigver.datetime.now(_dt.timezone.utc) - want).total_seconds()) < 1,
        "cert.datetime": abs((saml2_cert.datetime.now(_dt.timezone.utc) - want).total_seconds()) < 1,
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise Rejected(f"internal: clock pinning ineffective for {', '.join(bad)}")


# ---------------------------------------------------------------------------


def _epoch(ts):
    from saml2 import time_util

    return calendar.timegm(time_util.str_to_time(ts))


def load_metadata_entities(path):
    """Return {entityID: n_signing_certs} for every IdP in the metadata file."""
    from defusedxml import ElementTree as ET

    md = "urn:oasis:names:tc:SAML:2.0:metadata"
    ds = "http://www.w3.org/2000/09/xmldsig#"
    try:
        root = ET.parse(path).getroot()
    except Exception as exc:
        raise Rejected(f"cannot parse IdP metadata {path}: {exc}")
    if root.tag == f"{{{md}}}EntityDescriptor":
        eds = [root]
    elif root.tag == f"{{{md}}}EntitiesDescriptor":
        eds = root.iter(f"{{{md}}}EntityDescriptor")
    else:
        raise Rejected(f"IdP metadata root is {root.tag}, expected md:EntityDescriptor")
    out = {}
    for ed in eds:
        for idp in ed.findall(f"{{{md}}}IDPSSODescriptor"):
            n = 0
            for kd in idp.findall(f"{{{md}}}KeyDescriptor"):
                if kd.get("use") in (None, "signing") and kd.find(f".//{{{ds}}}X509Certificate") is not None:
                    n += 1
            out[ed.get("entityID")] = out.get(ed.get("entityID"), 0) + n
    if not out:
        raise Rejected("IdP metadata has no md:IDPSSODescriptor")
    if not any(out.values()):
        raise Rejected("IdP metadata has no signing X509 certificate")
    return out


def structural_checks(xml, acs, accepted_audiences, now, destination=None):
    """Checks AWS applies that pysaml2 is lax about (see README)."""
    from defusedxml import ElementTree as ET

    s = f"{{{SAML_NS}}}"
    p = f"{{{SAMLP_NS}}}"
    root = ET.fromstring(xml)
    if root.tag != f"{p}Response":
        raise Rejected(f"root element is {root.tag}, expected samlp:Response")

    dest = root.get("Destination")
    if dest is None:
        raise Rejected("Response has no Destination")
    if dest != (destination or acs):
        raise Rejected(f"Response Destination {dest!r} != {destination or acs!r}")

    assertions = root.findall(f"{s}Assertion")
    if len(assertions) != 1 or root.findall(f"{s}EncryptedAssertion"):
        raise Rejected("Response must contain exactly one (unencrypted) Assertion")
    a = assertions[0]

    cond = a.find(f"{s}Conditions")
    if cond is None:
        raise Rejected("Assertion has no Conditions")
    audiences = [(x.text or "").strip() for x in cond.iter(f"{s}Audience")]
    if not audiences:
        raise Rejected("Assertion has no AudienceRestriction/Audience")
    if not any(x in accepted_audiences for x in audiences):
        raise Rejected(f"audience {audiences} does not include {sorted(accepted_audiences)}")
    if cond.get("NotOnOrAfter") and not now < _epoch(cond.get("NotOnOrAfter")):
        raise Rejected(f"Conditions expired: NotOnOrAfter={cond.get('NotOnOrAfter')}")
    if cond.get("NotBefore") and not _epoch(cond.get("NotBefore")) <= now:
        raise Rejected(f"Conditions not yet valid: NotBefore={cond.get('NotBefore')}")

    subj = a.find(f"{s}Subject")
    if subj is None or subj.find(f"{s}NameID") is None:
        raise Rejected("Assertion Subject has no NameID")
    scs = subj.findall(f"{s}SubjectConfirmation")
    if len(scs) != 1:
        raise Rejected(f"expected exactly one SubjectConfirmation, got {len(scs)}")
    sc = scs[0]
    if sc.get("Method") != BEARER:
        raise Rejected(f"SubjectConfirmation Method {sc.get('Method')!r} is not bearer")
    scd = sc.find(f"{s}SubjectConfirmationData")
    if scd is None:
        raise Rejected("bearer SubjectConfirmation has no SubjectConfirmationData")
    if scd.get("Recipient") != acs:
        raise Rejected(f"SubjectConfirmationData Recipient {scd.get('Recipient')!r} != ACS {acs!r}")
    if not scd.get("NotOnOrAfter"):
        raise Rejected("SubjectConfirmationData has no NotOnOrAfter")
    if not now < _epoch(scd.get("NotOnOrAfter")):
        raise Rejected(f"SubjectConfirmationData expired: NotOnOrAfter={scd.get('NotOnOrAfter')}")
    if scd.get("NotBefore") and not _epoch(scd.get("NotBefore")) <= now:
        raise Rejected(f"SubjectConfirmationData not yet valid: NotBefore={scd.get('NotBefore')}")


def validate(args):
    now = args.now

    xmlsec = shutil.which("xmlsec1")
    if not xmlsec:
        raise Rejected("xmlsec1 not found on PATH (run tests/peers/install.sh)")

    try:
        with open(args.response, "rb") as f:
            b64 = b"".join(f.read().split())
    except OSError as exc:
        raise Rejected(f"cannot read --response: {exc}")
    if not b64:
        raise Rejected("--response file is empty")
    try:
        xml = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Rejected(f"SAMLResponse is not valid base64: {exc}")

    idps = load_metadata_entities(args.idp_metadata)

    # pysaml2 silently drops a Response that fails its own type validation
    # (e.g. an xs:dateTime with "+00:00" instead of "Z"); surface the reason.
    from saml2 import samlp
    from saml2.validate import NotValid, valid_instance

    try:
        inst = samlp.response_from_string(xml)
    except Exception as exc:
        raise Rejected(f"SAMLResponse is not well-formed XML: {exc}")
    if inst is None:
        raise Rejected("SAMLResponse is not a samlp:Response")
    try:
        valid_instance(inst)
    except NotValid as exc:
        raise Rejected(f"Response fails pysaml2 type validation: {exc}")

    from saml2 import BINDING_HTTP_POST
    from saml2.client import Saml2Client
    from saml2.config import SPConfig
    import saml2.response

    accepted_audiences = {args.entity} if args.strict_audience else {args.entity, args.acs}

    # pysaml2 only accepts Audience == its own entityID; AWS also accepts its
    # sign-in endpoint URL (the ACS). Widen for_me() accordingly.
    real_for_me = saml2.response.for_me

    def for_me(conditions, _myself):
        return any(real_for_me(conditions, aud) for aud in accepted_audiences)

    saml2.response.for_me = for_me

    conf = SPConfig()
    conf.load(
        {
            "entityid": args.entity,
            "xmlsec_binary": xmlsec,
            "metadata": {"local": [args.idp_metadata]},
            "accepted_time_diff": 0,
            "only_use_keys_in_metadata": True,
            "allow_unknown_attributes": True,
            "delete_tmpfiles": True,
            "service": {
                "sp": {
                    "endpoints": {
                        "assertion_consumer_service": [(args.acs, BINDING_HTTP_POST)]
                        + ([(args.destination, BINDING_HTTP_POST)] if args.destination else []),
                    },
                    "allow_unsolicited": True,
                    "authn_requests_signed": False,
                    "want_assertions_signed": False,
                    "want_response_signed": False,
                    "want_assertions_or_response_signed": True,
                }
            },
        }
    )
    client = Saml2Client(config=conf)
    if not set(client.metadata.identity_providers()) >= set(idps):
        raise Rejected("pysaml2 did not load the IdP metadata (expired validUntil?)")

    try:
        resp = client.parse_authn_request_response(b64.decode("ascii"), BINDING_HTTP_POST)
    except Exception as exc:
        name = type(exc).__name__
        msg = str(exc)
        if isinstance(exc.args[0] if exc.args else None, dict):
            d = exc.args[0]
            msg = d.get("message", "") + (" " + str(d.get("validators")) if d.get("validators") else "")
            if d.get("reason"):
                msg += " " + str(d["reason"])
        if name == "MissingKey":
            msg = f"no signing key in the IdP metadata for issuer {msg!r}"
        raise Rejected(f"pysaml2 rejected the response: {name}: {msg}")

    if resp is None or resp.response is None:
        raise Rejected("pysaml2 rejected the response (could not parse/verify)")

    # pysaml2's _verify() returns None (and silently skips the assertion) on a
    # bad Destination, IssueInstant out of +-1 day, or version; catch that here.
    if resp.assertion is None:
        r = resp.response
        why = []
        if r.destination and r.destination not in client.service_urls(BINDING_HTTP_POST):
            why.append(f"Destination {r.destination!r} is not the ACS")
        try:
            if not resp.issue_instant_ok():
                why.append(f"IssueInstant {r.issue_instant} not within 1 day of now")
        except Exception as exc:
            why.append(f"bad IssueInstant: {exc}")
        raise Rejected("pysaml2 rejected the response: " + ("; ".join(why) or "no valid assertion"))

    assertion = resp.assertion
    issuer = (assertion.issuer.text or "").strip() if assertion.issuer is not None else ""
    if issuer not in idps:
        raise Rejected(f"Assertion Issuer {issuer!r} is not an IdP in the metadata {sorted(idps)}")
    if resp.response.issuer is not None:
        r_issuer = (resp.response.issuer.text or "").strip()
        if r_issuer != issuer:
            raise Rejected(f"Response Issuer {r_issuer!r} != Assertion Issuer {issuer!r}")

    # pysaml2 verified every signature that is present; report which ones.
    resp_signed = resp.response.signature is not None
    assertion_signed = assertion.signature is not None
    if not (resp_signed or assertion_signed):
        raise Rejected("neither the Response nor the Assertion is signed")
    signed = "both" if resp_signed and assertion_signed else ("response" if resp_signed else "assertion")

    structural_checks(xml, args.acs, accepted_audiences, now, args.destination)

    nid = resp.name_id or assertion.subject.name_id
    attributes = {}
    name_formats = {}
    value_types = {}
    xsi_type = "{http://www.w3.org/2001/XMLSchema-instance}type"
    for stmt in assertion.attribute_statement:
        for attr in stmt.attribute:
            vals = attributes.setdefault(attr.name, [])
            name_formats[attr.name] = attr.name_format
            types = value_types.setdefault(attr.name, [])
            for v in attr.attribute_value:
                vals.append(str(v.text) if v.text is not None else "")
                types.append(v.extension_attributes.get(xsi_type))
    authn = [
        ref.text
        for stmt in assertion.authn_statement
        for ref in [stmt.authn_context.authn_context_class_ref]
        if ref is not None
    ]

    return {
        "issuer": issuer,
        "name_id": (nid.text or "").strip() if nid is not None else None,
        "name_id_format": nid.format if nid is not None else None,
        "attributes": attributes,
        "name_formats": name_formats,
        "value_types": value_types,
        "authn_context": authn[0] if authn else None,
        "signed": signed,
    }


def main(argv=None):
    ap = _Parser(description="Validate a base64 SAMLResponse like AWS's SP would.")
    ap.add_argument("--idp-metadata", required=True, help="IdP metadata XML file")
    ap.add_argument("--response", required=True, help="file containing the base64 SAMLResponse")
    ap.add_argument("--now", required=True, help="evaluation time, UNIX epoch seconds")
    ap.add_argument("--destination", default=None, help="expected Response Destination (default: --acs)")
    ap.add_argument("--entity", default=DEFAULT_ENTITY, help=f"SP entityID (default {DEFAULT_ENTITY})")
    ap.add_argument("--acs", default=DEFAULT_ACS, help=f"ACS URL (default {DEFAULT_ACS})")
    ap.add_argument(
        "--strict-audience",
        action="store_true",
        help="accept only Audience == --entity (AWS also accepts the ACS URL)",
    )
    ap.add_argument("--debug", action="store_true", help="pysaml2 debug logging on stderr")
    args = ap.parse_args(argv)

    try:
        args.now = int(args.now)
    except ValueError:
        fail(f"--now must be integer UNIX seconds, got {args.now!r}")

    if args.debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    else:
        warnings.simplefilter("ignore")
        logging.getLogger("saml2").setLevel(logging.CRITICAL + 1)
        logging.getLogger().addHandler(logging.NullHandler())
        logging.lastResort = None

    # Pin the clock before pysaml2 is imported, then patch its modules.
    pin_time_module(args.now)
    try:
        import saml2  # noqa: F401
        import saml2.client, saml2.config, saml2.response, saml2.sigver, saml2.cert  # noqa: F401,E401
        import saml2.time_util, saml2.validate, saml2.mdstore  # noqa: F401,E401
    except ImportError as exc:
        fail(f"pysaml2 not importable ({exc}); run tests/peers/install.sh and use its venv python")
    pin_saml2_modules(args.now)

    try:
        _self_check(args.now)
        result = validate(args)
    except Rejected as exc:
        fail(str(exc))
    except SystemExit as exc:
        fail(f"unexpected exit ({exc.code})")
    except BaseException as exc:  # never exit 0 on anything unexpected
        fail(f"{type(exc).__name__}: {exc}")

    print(json.dumps(result, sort_keys=True))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

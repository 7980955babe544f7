#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target under fuzz/corpus/<target>/seed-*.

Seeds are real, valid inputs (tokens, forms, AuthnRequests, AdmissionReviews, the standalone
example) in the shape each `rolegate::fuzzing` function documents. Run from the repository
root; it only (re)writes files named seed-*, so minimized and crash inputs stay.
"""
import base64
import json
import pathlib
import subprocess
import zlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
NOW = 1_796_083_200  # rolegate::fuzzing's pinned instant, 2026-12-01T00:00:00Z
ISSUER = "https://kubernetes.default.svc.cluster.local"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def rs256(header: dict, claims: dict) -> str:
    """A real RS256 token of the standalone example's issuer key."""
    signing_input = f"{b64url(dumps(header))}.{b64url(dumps(claims))}"
    key = ROOT / "examples" / "standalone" / "issuer" / "sa-signer.key"
    signature = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(key)],
        input=signing_input.encode(), capture_output=True, check=True,
    ).stdout
    return f"{signing_input}.{b64url(signature)}"


def sa_claims(sub="system:serviceaccount:team-a:app", **extra):
    claims = {
        "iss": ISSUER, "sub": sub, "aud": ["rolegate"], "iat": NOW - 60, "nbf": NOW - 60,
        "exp": NOW + 3600,
        "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "app"},
                          "pod": {"name": "app-7d4b9c"}},
    }
    claims.update(extra)
    return claims


def write(target: str, seeds: dict):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (directory / f"seed-{name}").write_bytes(data)


def jwt():
    kid = json.loads((ROOT / "examples/standalone/issuer/jwks.json").read_text())["keys"][0]["kid"]
    real = rs256({"alg": "RS256", "kid": kid, "typ": "JWT"}, sa_claims())
    es = dumps({"alg": "ES256", "kid": "fuzz-es256", "typ": "JWT"})
    signed = lambda claims, header=es, mode=1: bytes([mode]) + header + b"\0" + dumps(claims)
    write("jwt", {
        "raw-rs256-service-account": b"\0" + real.encode(),
        "raw-rs256-delegation": b"\2" + real.encode(),
        "raw-alg-none": b"\0" + f"{b64url(dumps({'alg': 'none'}))}.{b64url(dumps(sa_claims()))}.".encode(),
        "raw-hs256": b"\0" + f"{b64url(dumps({'alg': 'HS256'}))}.{b64url(dumps(sa_claims()))}.c2ln".encode(),
        "signed-service-account": signed(sa_claims()),
        "signed-expired": signed(sa_claims(exp=NOW - 1)),
        "signed-not-yet-valid": signed(sa_claims(nbf=NOW + 3600)),
        "signed-wrong-audience": signed(sa_claims(aud="someone-else")),
        "signed-person-subject": signed(sa_claims(sub="ada@example.com")),
        "signed-no-kid": signed(sa_claims(), header=dumps({"alg": "ES256"})),
        "signed-unknown-kid": signed(sa_claims(), header=dumps({"alg": "ES256", "kid": "rotated"})),
        "signed-rs256-header": signed(sa_claims(), header=dumps({"alg": "RS256", "kid": "fuzz-es256"})),
        "signed-oidc-issuer": signed({"iss": "http://127.0.0.1:9", "sub": "ada", "aud": "rolegate-web",
                                      "exp": NOW + 600}, mode=3),
    })


def jwks():
    example = (ROOT / "examples/standalone/issuer/jwks.json").read_bytes()
    ours = {"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "fuzz-es256",
            "x": "{x}", "y": "{y}"}
    rsa = json.loads(example)["keys"][0]
    write("jwks", {
        "ours": b"\0" + dumps({"keys": [ours]}),
        "ours-no-kid-in-token": b"\1" + dumps({"keys": [ours]}),
        "ours-after-rsa": b"\0" + dumps({"keys": [rsa, ours]}),
        "example-rsa": b"\0" + example,
        "same-kid-other-key": b"\0" + dumps({"keys": [dict(ours, x=ours["y"], y=ours["x"])]}),
        "empty": b"\0" + dumps({"keys": []}),
    })


def discovery():
    doc = {
        "issuer": "{issuer}", "authorization_endpoint": "{issuer}/auth",
        "token_endpoint": "{issuer}/token", "jwks_uri": "{issuer}/jwks",
        "userinfo_endpoint": "{issuer}/me", "device_authorization_endpoint": "{issuer}/device",
        "response_types_supported": ["code"], "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "code_challenge_methods_supported": ["S256"],
    }
    write("discovery", {
        "full": dumps(doc),
        "trailing-slash-issuer": dumps(dict(doc, issuer="{issuer}/")),
        "other-issuer": dumps(dict(doc, issuer="https://evil.example")),
        "no-jwks-uri": dumps({k: v for k, v in doc.items() if k != "jwks_uri"}),
        "file-jwks-uri": dumps(dict(doc, jwks_uri="file:///etc/hostname")),
        "minimal": dumps({"issuer": "{issuer}", "authorization_endpoint": "{issuer}/a",
                          "token_endpoint": "{issuer}/t", "jwks_uri": "{issuer}/jwks"}),
    })


def delegation():
    token = rs256({"alg": "RS256", "kid": "k"}, {"iss": "https://op.example", "sub": "ada",
                                                 "aud": "rolegate-web", "exp": NOW + 600})
    full = [("grant_type", JWT_BEARER), ("id_token", token), ("target", "aws"),
            ("client_id", "rolegate-web"), ("api_type", "aws"),
            ("role", "arn:aws:iam::123456789012:role/app-reader"),
            ("principal", "arn:aws:iam::123456789012:saml-provider/rolegate"), ("scope", "openid")]
    from urllib.parse import urlencode
    write("delegation_form", {
        "full": urlencode(full).encode(),
        "minimal": urlencode(full[:4]).encode(),
        "password-grant": b"grant_type=password&id_token=x",
        "duplicate": urlencode(full[:4] + [("target", "other")]).encode(),
        "percent-and-plus": b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&target=a+b%2Cc&id_token=%FF%FE",
    })
    write("delegation_json", {
        "full": dumps(dict(full)),
        "minimal": dumps(dict(full[:4])),
        "sequence": dumps([v for _, v in full[:4]]),
        "wrong-type": dumps({"grant_type": JWT_BEARER, "id_token": ["a"], "target": 1}),
        "null-fields": dumps({"grant_type": None, "id_token": None}),
    })


def authn_request(issuer="https://signin.aws.amazon.com/saml", acs="https://signin.aws.amazon.com/saml"):
    return (
        '<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_req42" Version="2.0" '
        'IssueInstant="2026-11-26T10:00:00Z" Destination="http://rolegate/samlp/aws" '
        f'AssertionConsumerServiceURL="{acs}" '
        'ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST">'
        f"<saml:Issuer>{issuer}</saml:Issuer>"
        '<samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent" AllowCreate="true"/>'
        '<samlp:RequestedAuthnContext Comparison="exact"><saml:AuthnContextClassRef>'
        "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
        "</saml:AuthnContextClassRef></samlp:RequestedAuthnContext></samlp:AuthnRequest>"
    ).encode()


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def authn_requests():
    good = authn_request()
    minimal = (b'<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
               b'ID="a" Version="2.0"><saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">'
               b"https://signin.aws.amazon.com/saml</saml:Issuer></samlp:AuthnRequest>")
    foreign = authn_request(acs="https://evil.example/acs")
    dtd = b'<!DOCTYPE x [<!ENTITY e "boom">]>' + good
    write("authn_request_redirect", {
        "xml-good": b"\1" + good,
        "xml-minimal": b"\1" + minimal,
        "xml-foreign-acs": b"\1" + foreign,
        "xml-dtd": b"\1" + dtd,
        "deflate-good": b"\0" + raw_deflate(good),
        "param-good": b"\2" + base64.b64encode(raw_deflate(good)),
        "param-wrapped": b"\2" + base64.encodebytes(raw_deflate(good)),
    })
    write("authn_request_post", {
        "xml-good": b"\0" + good,
        "xml-minimal": b"\0" + minimal,
        "xml-other-issuer": b"\0" + authn_request(issuer="https://sp.example/metadata"),
        "param-good": b"\1" + base64.b64encode(good),
        "param-not-base64": b"\1%%%",
    })


def admission():
    def review(pod, namespace="team-a"):
        return dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                      "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                                  "namespace": namespace, "operation": "CREATE",
                                  "kind": {"group": "", "version": "v1", "kind": "Pod"},
                                  "resource": {"group": "", "version": "v1", "resource": "pods"},
                                  "object": pod}})

    def pod(sa="app", **spec):
        p = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "team-a"},
             "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app:1"}]}}
        p["spec"].update(spec)
        return p

    busy = pod(
        containers=[{"name": "app", "image": "app:1",
                     "env": [{"name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "http://127.0.0.1:9911/creds"}],
                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                    {"name": "istio-proxy", "image": "proxy:1"}],
        volumes=[{"name": "data", "emptyDir": {}}],
        initContainers=[{"name": "migrate", "image": "migrate:1"}])
    busy["metadata"]["annotations"] = {"rolegate.dev/skip-containers": "istio-proxy",
                                       "rolegate.dev/role": "arn:aws:iam::123456789012:role/app-reader"}
    opted = pod(sa="stranger")
    opted["metadata"]["labels"] = {"rolegate.dev/inject": "true"}
    write("admission_review", {
        "mapped": review(pod()),
        "unmapped": review(pod(sa="stranger")),
        "opted-in": review(opted),
        "busy": review(busy),
        "other-namespace": review(pod(), namespace="team-b"),
        "not-a-pod": review({"spec": {"containers": "nope"}}),
        "no-request": dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
    })


def sealed_cookie():
    write("sealed_cookie", {
        "header-forged": b"\0theme=dark; rolegate_flow=" + b64url(b"\0" * 12 + b"x" * 40).encode()
                         + b"; rolegate_session=" + b64url(b"y" * 60).encode(),
        "header-empty-values": b"\0rolegate_flow=; rolegate_session",
        "edit-flow-flip": b"\1\0" + bytes([0, 128, ord("A")]),
        "edit-session-insert": b"\1\1" + bytes([1, 255, ord(" ")]),
        "edit-flow-as-session": b"\1\2",
        "edit-session-truncate": b"\1\1" + bytes([3, 200, 0]),
        "edit-flow-delete-last": b"\1\0" + bytes([2, 255, 0]),
    })


def standalone_yaml():
    seeds = {p.stem: p.read_bytes() for p in sorted((ROOT / "examples/standalone").glob("*.yaml"))}
    seeds["secret-data"] = (b"apiVersion: v1\nkind: Secret\nmetadata: {name: aws-keys, namespace: rolegate}\n"
                            b"data:\n  accessKeyId: QUtJQUlPU0ZPRE5ON0VYQU1QTEU=\n"
                            b"stringData:\n  secretAccessKey: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")
    seeds["service-account"] = (b"apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: app\n  namespace: demo\n"
                                b"  annotations: {rolegate.dev/role: 'arn:aws:iam::123456789012:role/demo-s3-reader'}\n")
    seeds["anchors"] = (b"apiVersion: v1\nkind: Namespace\nmetadata: &m {name: a, labels: &l {team: a}}\n---\n"
                        b"apiVersion: v1\nkind: Namespace\nmetadata: {name: b, labels: *l}\n")
    write("standalone_yaml", seeds)


if __name__ == "__main__":
    jwt()
    jwks()
    discovery()
    delegation()
    authn_requests()
    admission()
    sealed_cookie()
    standalone_yaml()

"""moto's server, with the IAM SAML-provider tag calls real IAM has and moto 5.2.5 lacks.

moto 5.2.5 ignores `Tags` on `CreateSAMLProvider`, leaves them out of `GetSAMLProvider`, and
answers `TagSAMLProvider`, `UntagSAMLProvider` and `ListSAMLProviderTags` with an HTML 404. rolegate
marks the IAM SAML providers it owns with a tag, so the tests need those calls to behave as IAM
documents them (https://docs.aws.amazon.com/IAM/latest/APIReference/API_GetSAMLProvider.html,
API_TagSAMLProvider.html, API_UntagSAMLProvider.html, API_ListSAMLProviderTags.html). Nothing
else of moto changes. Run it exactly as `moto_server`: `python moto_server.py -H HOST -p PORT`.
"""

import sys

from moto.core.responses import ActionResult, EmptyResult
from moto.iam import models
from moto.iam.responses import IamResponse
from moto.server import main


def _merge(provider, tags):
    current = {t["Key"]: t["Value"] for t in getattr(provider, "tags", [])}
    for tag in tags or []:
        current[tag["Key"]] = tag["Value"]
    provider.tags = [{"Key": k, "Value": v} for k, v in current.items()]


_create = IamResponse.create_saml_provider


def create_saml_provider(self):
    result = _create(self)
    name = self._get_param("Name")
    provider = self.backend.saml_providers[name]
    provider.tags = []
    _merge(provider, self._get_param("Tags", []))
    return result


def tag_saml_provider(self):
    provider = self.backend.get_saml_provider(self._get_param("SAMLProviderArn"))
    _merge(provider, self._get_param("Tags", []))
    return EmptyResult()


def untag_saml_provider(self):
    provider = self.backend.get_saml_provider(self._get_param("SAMLProviderArn"))
    drop = set(self._get_param("TagKeys", []))
    provider.tags = [t for t in getattr(provider, "tags", []) if t["Key"] not in drop]
    return EmptyResult()


def list_saml_provider_tags(self):
    provider = self.backend.get_saml_provider(self._get_param("SAMLProviderArn"))
    return ActionResult({"Tags": getattr(provider, "tags", []), "IsTruncated": False})


IamResponse.create_saml_provider = create_saml_provider
IamResponse.tag_saml_provider = tag_saml_provider
IamResponse.untag_saml_provider = untag_saml_provider
IamResponse.list_saml_provider_tags = list_saml_provider_tags
models.SAMLProvider.tags = []

if __name__ == "__main__":
    sys.exit(main())

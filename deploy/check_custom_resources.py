#!/usr/bin/env python3
"""Checks the custom resources the manifests render (KEDA's ScaledObject
and TriggerAuthentication, the Prometheus Operator's ServiceMonitor,
cert-manager's Issuer and Certificate), which the Kubernetes schemas do not
cover, against the parts of their CRDs' schemas that Sluice uses: the
required fields, their types, and no field those CRDs do not define.

Usage: check_custom_resources.py RENDERED.yaml...
"""

import sys

import jsonschema
import yaml

STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def array_of(items, **more):
    """An array of `items`."""
    return {"type": "array", "items": items, **more}


def closed(properties, required=(), **more):
    """An object with these properties, the `required` ones among them, and
    no others."""
    schema = {"type": "object"}
    if required:
        schema["required"] = list(required)
    return {**schema, "additionalProperties": False, "properties": properties, **more}


LABEL_SELECTOR = closed(
    {
        "matchLabels": STRING_MAP,
        "matchExpressions": array_of(
            closed(
                {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": array_of({"type": "string"}),
                },
                required=["key", "operator"],
            )
        ),
    }
)


SECRET_KEY = closed({"name": {"type": "string"}, "key": {"type": "string"}}, required=["name", "key"])
SECRET_OR_CONFIGMAP = closed({"secret": SECRET_KEY, "configMap": SECRET_KEY})
ISSUER_REF = closed(
    {
        "name": {"type": "string"},
        "kind": {"enum": ["Issuer", "ClusterIssuer"]},
        "group": {"type": "string"},
    },
    required=["name"],
)
DURATION = {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$"}


def resource(spec):
    return closed(
        {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "namespace": {"type": "string"},
                    "labels": STRING_MAP,
                    "annotations": STRING_MAP,
                },
            },
            "spec": spec,
        },
        required=["apiVersion", "kind", "metadata", "spec"],
    )


SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): resource(
        closed(
            {
                "scaleTargetRef": closed(
                    {
                        "name": {"type": "string"},
                        "kind": {"type": "string"},
                        "apiVersion": {"type": "string"},
                    },
                    required=["name"],
                ),
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "triggers": array_of(
                    closed(
                        {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            # KEDA's CRD: metadata values are strings.
                            "metadata": STRING_MAP,
                            "authenticationRef": closed(
                                {
                                    "name": {"type": "string"},
                                    "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
                                },
                                required=["name"],
                            ),
                        },
                        required=["type", "metadata"],
                    ),
                    minItems=1,
                ),
            },
            required=["scaleTargetRef", "triggers"],
        )
    ),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): resource(
        closed(
            {
                "secretTargetRef": array_of(
                    closed(
                        {
                            # The parameters KEDA's external scalers take.
                            "parameter": {"enum": ["caCert", "tlsClientCert", "tlsClientKey"]},
                            "name": {"type": "string"},
                            "key": {"type": "string"},
                        },
                        required=["parameter", "name", "key"],
                    )
                ),
            }
        )
    ),
    ("cert-manager.io/v1", "Issuer"): resource(
        closed(
            {
                "selfSigned": {"type": "object"},
                "ca": closed({"secretName": {"type": "string"}}, required=["secretName"]),
            },
            minProperties=1,
            maxProperties=1,
        )
    ),
    ("cert-manager.io/v1", "Certificate"): resource(
        closed(
            {
                "secretName": {"type": "string"},
                "issuerRef": ISSUER_REF,
                "isCA": {"type": "boolean"},
                "commonName": {"type": "string", "maxLength": 64},
                "dnsNames": array_of({"type": "string"}),
                "ipAddresses": array_of({"type": "string"}),
                "duration": DURATION,
                "renewBefore": DURATION,
                "usages": array_of(
                    {
                        "enum": [
                            "signing", "digital signature", "content commitment",
                            "key encipherment", "key agreement", "data encipherment",
                            "cert sign", "crl sign", "encipher only", "decipher only",
                            "any", "server auth", "client auth", "code signing",
                            "email protection", "s/mime", "ipsec end system",
                            "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
                            "microsoft sgc", "netscape sgc",
                        ]
                    }
                ),
                "privateKey": closed(
                    {
                        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                        "size": {"type": "integer"},
                        "rotationPolicy": {"enum": ["Never", "Always"]},
                    }
                ),
            },
            required=["secretName", "issuerRef"],
        )
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): resource(
        closed(
            {
                "selector": LABEL_SELECTOR,
                "endpoints": array_of(
                    closed(
                        {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scheme": {"enum": ["http", "https"]},
                            "tlsConfig": closed(
                                {
                                    "serverName": {"type": "string"},
                                    "ca": SECRET_OR_CONFIGMAP,
                                    "cert": SECRET_OR_CONFIGMAP,
                                    "keySecret": SECRET_KEY,
                                }
                            ),
                        }
                    ),
                    minItems=1,
                ),
            },
            required=["selector", "endpoints"],
        )
    ),
}

# Keys Sluice's external scaler reads from a trigger's metadata (besides
# KEDA's own scalerAddress); see broker/src/api/scaler.rs.
SCALER_KEYS = {"scalerAddress", "queue", "stream", "function", "target",
               "activationTarget", "scaleOnInFlight"}


def main(paths):
    failures = 0
    for path in paths:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            key = (doc.get("apiVersion"), doc.get("kind"))
            name = f"{path}: {key[1]}/{doc.get('metadata', {}).get('name')}"
            schema = SCHEMAS.get(key)
            if schema is None:
                continue
            errors = list(jsonschema.Draft7Validator(schema).iter_errors(doc))
            if key[1] == "ScaledObject":
                for t in doc["spec"].get("triggers", []):
                    if t.get("type") in ("external", "external-push"):
                        unknown = set(t.get("metadata", {})) - SCALER_KEYS
                        if unknown:
                            errors.append(f"trigger metadata: unknown keys {sorted(unknown)}")
                        if "scalerAddress" not in t.get("metadata", {}):
                            errors.append("trigger metadata: scalerAddress is required")
            for e in errors:
                failures += 1
                where = "/".join(str(p) for p in getattr(e, "absolute_path", []))
                print(f"ERROR {name}: {where}: {getattr(e, 'message', e)}")
            if not errors:
                print(f"INFO {name} passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

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
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


SECRET_KEY = {
    "type": "object",
    "required": ["name", "key"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string"}, "key": {"type": "string"}},
}
SECRET_OR_CONFIGMAP = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"secret": SECRET_KEY, "configMap": SECRET_KEY},
}
ISSUER_REF = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "kind": {"enum": ["Issuer", "ClusterIssuer"]},
        "group": {"type": "string"},
    },
}
DURATION = {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$"}


def resource(spec):
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
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
    }


SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): resource(
        {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string"},
                        "apiVersion": {"type": "string"},
                    },
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            # KEDA's CRD: metadata values are strings.
                            "metadata": STRING_MAP,
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "additionalProperties": False,
                                "properties": {
                                    "name": {"type": "string"},
                                    "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
                                },
                            },
                        },
                    },
                },
            },
        }
    ),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): resource(
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["parameter", "name", "key"],
                        "additionalProperties": False,
                        "properties": {
                            # The parameters KEDA's external scalers take.
                            "parameter": {"enum": ["caCert", "tlsClientCert", "tlsClientKey"]},
                            "name": {"type": "string"},
                            "key": {"type": "string"},
                        },
                    },
                },
            },
        }
    ),
    ("cert-manager.io/v1", "Issuer"): resource(
        {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "selfSigned": {"type": "object"},
                "ca": {
                    "type": "object",
                    "required": ["secretName"],
                    "additionalProperties": False,
                    "properties": {"secretName": {"type": "string"}},
                },
            },
        }
    ),
    ("cert-manager.io/v1", "Certificate"): resource(
        {
            "type": "object",
            "required": ["secretName", "issuerRef"],
            "additionalProperties": False,
            "properties": {
                "secretName": {"type": "string"},
                "issuerRef": ISSUER_REF,
                "isCA": {"type": "boolean"},
                "commonName": {"type": "string", "maxLength": 64},
                "dnsNames": {"type": "array", "items": {"type": "string"}},
                "ipAddresses": {"type": "array", "items": {"type": "string"}},
                "duration": DURATION,
                "renewBefore": DURATION,
                "usages": {
                    "type": "array",
                    "items": {
                        "enum": [
                            "signing", "digital signature", "content commitment",
                            "key encipherment", "key agreement", "data encipherment",
                            "cert sign", "crl sign", "encipher only", "decipher only",
                            "any", "server auth", "client auth", "code signing",
                            "email protection", "s/mime", "ipsec end system",
                            "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
                            "microsoft sgc", "netscape sgc",
                        ]
                    },
                },
                "privateKey": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                        "size": {"type": "integer"},
                        "rotationPolicy": {"enum": ["Never", "Always"]},
                    },
                },
            },
        }
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): resource(
        {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": LABEL_SELECTOR,
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scheme": {"enum": ["http", "https"]},
                            "tlsConfig": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "serverName": {"type": "string"},
                                    "ca": SECRET_OR_CONFIGMAP,
                                    "cert": SECRET_OR_CONFIGMAP,
                                    "keySecret": SECRET_KEY,
                                },
                            },
                        },
                    },
                },
            },
        }
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

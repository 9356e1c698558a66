"""The local stack: the whole system on one machine (architecture decision 13).

- ``local.aws`` — moto in server mode on 127.0.0.1, provisioned from ``infra.definitions``;
- ``local.frontdoor`` — API Gateway REST + Cognito authorizer + Lambda, in-process;
- ``local.seed`` — demo tenants, clinics, practitioners and users, created through the product;
- ``local.stack`` — all of it in one object; ``python -m local`` runs it, ``python -m local.token``
  prints a demo user's ID token.

See ``local/README.md`` for how to run it and how it differs from a deployed stack.
"""

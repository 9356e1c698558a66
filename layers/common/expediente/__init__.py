"""Expediente's shared package: what every domain function uses.

Modules: ``settings`` (environment), ``context`` (verified request context and
tenancy), ``permissions`` (role × resource × interaction), ``errors`` (one
hierarchy mapped to OperationOutcome), ``fhir`` (responses, Bundles, paging),
``api`` (the HTTP front of every function), ``identifiers`` (CURP, CLUES,
cédula, catalogues), ``crypto`` (envelope encryption, blind indexes), ``audit``,
``store`` (versioned resources on DynamoDB), ``events``, ``idempotency``.
"""

"""Synthetic wearers and their webhooks: data to drive, test and demonstrate AUREN with.

``wearers`` generates seeded daily histories (pure), ``render`` turns a day into each
provider's signed wire format, ``load`` makes many unique native webhooks fast for the load
generators, ``send`` delivers them to a bridge and summarises the answers, ``credentials``
makes fresh provider secrets, ``demo`` runs a real bridge end to end with all of it, and
``api`` simulates the provider clouds behind the wearables (OAuth, data APIs, faults and signed
notifications).
"""

"""Connections: a person's wearable accounts linked by OAuth, and the fetcher that turns the
thin providers' notifications into data.

``base`` holds the records and the Protocols (``ConnectionStore``: people, connections and
their encrypted tokens, connect states; ``JobQueue``: the fetch jobs' lifecycle) with their
in-memory twins in ``memory``; ``sqlite`` and ``postgres`` implement them for the two modes.
``crypto`` encrypts tokens at rest and signs connect states; ``oauth`` drives each provider's
authorization code flow through authlib; ``http`` makes one provider API call with finite
timeouts, rate limits (``limits``), ``Retry-After`` and retries; ``apis`` knows, per provider,
how to connect, fetch a job's records and revoke; ``fetcher`` runs the jobs; ``service`` is
the HTTP-free logic of the bridge's connection API; ``coverage`` says whether each person's
data is arriving. Records become events through the provider modules' pure normalizers
(``auren.providers``) and go to the same durable path as pushed data.
"""

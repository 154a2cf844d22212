"""A person's rights over their data: consent (recorded when an account is connected,
withdrawable), the audit log (who read, exported, erased or changed what, never the values)
and the consent texts, versioned. ``base`` holds the records and Protocols, ``memory`` the
twins, ``sqlite`` and ``postgres`` the stores, ``texts`` the consent texts, ``gate`` the
ingestion check a withdrawal switches on."""

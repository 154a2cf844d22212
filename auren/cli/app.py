"""The one place where every ``auren`` command is mounted.

Each module of :mod:`auren.cli` holds the thin commands of one concern (options parse, settings
build, the library runs); this one only puts them on the root command.
"""

from __future__ import annotations

import typer

from auren.cli import (
    archive,
    console,
    db,
    docs,
    erase,
    fetch,
    infra,
    privacy,
    serve,
    sim,
    toolkit,
)

app = typer.Typer(help="AUREN: verified biometric ingestion, insights and validation.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

# auren serve bridge | neuros | legacy | gateway | all
app.add_typer(serve.serve_app, name="serve")
serve.serve_app.command("all")(toolkit.serve_all)
# auren simulate, auren demo: synthetic wearers (auren.sim)
app.command("simulate")(sim.simulate)
app.command("demo")(sim.demo)
# auren sim providers: the provider API simulator (auren.sim.api)
sim_app = typer.Typer(help="Simulated provider clouds.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")
sim_app.command("providers")(sim.sim_providers)
# auren health | e2e | loadtest | faults | validate: the validation toolkit (auren.ops)
app.command("health")(toolkit.health)
app.command("e2e")(toolkit.e2e)
app.command("loadtest")(toolkit.loadtest)
app.command("faults")(toolkit.faults)
app.command("validate")(toolkit.validate)
app.command("faultproxy")(toolkit.faultproxy)
# auren infra up | down | status: the loopback Kafka/PostgreSQL/Redis stack (auren.infra)
app.add_typer(infra.infra_app, name="infra")
# auren db upgrade, auren sink: the full stack's PostgreSQL side
app.add_typer(db.db_app, name="db")
app.command("sink")(db.sink_command)
# auren console hash-password: a login of the operations console (the gateway's `/`)
app.add_typer(console.console_app, name="console")
# auren fetcher, auren jobs list | retry: thin providers' data fetched with each person's token
app.command("fetcher")(fetch.fetcher_command)
app.add_typer(fetch.jobs_app, name="jobs")
# auren reprocess: archived raw payloads parsed again by the current code
app.command("reprocess")(archive.reprocess_command)
# auren export, auren audit: a person's export and the audit log (auren.services.export)
app.command("export")(privacy.export_command)
app.command("audit")(privacy.audit_command)
# auren erase --user ID: a person erased from every store, with a receipt
app.command("erase")(erase.erase_command)
# auren docs generate: the generated, checked-in documents (auren.docsgen)
app.add_typer(docs.docs_app, name="docs")


def main() -> None:  # pragma: no cover - console entry point
    app()

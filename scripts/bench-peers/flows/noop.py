"""The trivial run on Prefect: a flow that does nothing, Gantry's `true`."""

from prefect import flow


@flow
def noop() -> None:
    pass

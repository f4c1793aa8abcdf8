"""The one interface every invertible step implements: ``Flow`` (and its composition ``FlowSequence``)."""

from flowmodels.flows.base import Flow, FlowSequence

__all__ = ["Flow", "FlowSequence"]

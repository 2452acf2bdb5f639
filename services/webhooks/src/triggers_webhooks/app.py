"""The webhooks component. Its routes and consumer arrive with their own issue; the target already runs."""

from __future__ import annotations

from triggers_common.http import Component
from triggers_common.runtime import Runtime


def create_component(rt: Runtime) -> Component:
    return Component(name="webhooks")

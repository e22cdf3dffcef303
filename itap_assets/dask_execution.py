"""dagster-dask's executor, with the three fixes ITAP needs to run on it (dagster-dask 0.29 / distributed 2026).

- distributed's `Client.submit` walks tuple arguments to find futures, and a `DagsterRun` (a named tuple) holds a
  Dagster record that refuses iteration: every run failed at its first step. The run and the job travel inside a
  `functools.partial`, which distributed does not walk; only the upstream futures are arguments.
- Task keys were `<job>.<step>`: on one shared cluster, a second run of the same job got the first run's result
  without executing (dagster-io/dagster#21418). Keys carry the run id.
- A `LocalCluster` was never closed: its worker processes outlived the run. It is now closed with the run.

distributed's size estimate of a step's events fails the same way (it walks them) and warns on every step; the
estimate only feeds its memory accounting, so that logger is kept to errors.

Scheduling (one task per step, upstream futures as dependencies) and the worker side (`query_on_dask_worker`) are
dagster-dask's own.
"""

from __future__ import annotations

import logging
from functools import partial

import dagster as dg
import dask.distributed
from dagster._core.errors import raise_execution_interrupts
from dagster._utils import iterate_with_context
from dagster_dask.executor import DaskExecutor, get_dask_resource_requirements, query_on_dask_worker

logging.getLogger("distributed.sizeof").setLevel(logging.ERROR)


class FixedDaskExecutor(DaskExecutor):
    """A DaskExecutor for the two cluster kinds ITAP configures: `existing` (a scheduler address) and `local`."""

    def execute(self, plan_context, execution_plan):
        if not plan_context.instance.is_persistent:
            raise dg.DagsterInvariantViolationError("the Dask executor needs a persistent Dagster instance "
                                                    "(DAGSTER_HOME)")
        if self.cluster_type == "existing":
            with dask.distributed.Client(self.cluster_configuration["address"]) as client:
                yield from self._submit(client, plan_context, execution_plan)
        else:
            with dask.distributed.LocalCluster(**self.build_dict(plan_context.job_name)) as cluster, \
                    dask.distributed.Client(cluster) as client:
                yield from self._submit(client, plan_context, execution_plan)

    @staticmethod
    def _submit(client, plan_context, execution_plan):
        run = plan_context.dagster_run
        step = partial(query_on_dask_worker, recon_job=plan_context.reconstructable_job, dagster_run=run,
                       run_config=plan_context.run_config, instance_ref=plan_context.instance.get_ref(),
                       known_state=execution_plan.known_state)
        futures = {}
        for level in execution_plan.get_steps_to_execute_by_level():
            for s in level:
                upstream = [futures[key] for step_input in s.step_inputs for key in step_input.dependency_keys]
                futures[s.key] = client.submit(step, upstream, step_keys=[s.key],
                                               key=f"{plan_context.job_name}.{s.key}.{run.run_id}",
                                               resources=get_dask_resource_requirements(s.tags))
        results = dask.distributed.as_completed(list(futures.values()), with_results=True)
        for _, events in iterate_with_context(raise_execution_interrupts, results):
            yield from events


def dask_executor(cluster: dict) -> dg.ExecutorDefinition:
    """The executor for `cluster` ({"existing": {"address": ...}} or {"local": LocalCluster arguments})."""
    ((kind, options),) = cluster.items()

    @dg.executor(name="dask", requirements=dg.multiple_process_executor_requirements())
    def _dask(_init_context):
        return FixedDaskExecutor(kind, options)

    return _dask

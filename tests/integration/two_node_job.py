"""Run shards on a two-node Ray cluster on loopback and remove a node mid-run (own process).

Usage: python two_node_job.py WORKDIR PRIOR  -> prints one JSON line with what happened.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from tasks.planning import make_plan
from tasks.pool import ActorPool
from tasks.shard import run_shard
from tasks.spec import JobSpec
from tasks.validate import validate_job
from tasks.worker import worker_kwargs


def main(workdir: str, prior: str) -> dict:
    """Run the job; return per-shard results and the nodes seen."""
    root = Path(workdir)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "node_ip_address": "127.0.0.1", "include_dashboard": False,
        "temp_dir": str(root / "ray")})
    worker = cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1")
    try:
        ray.init(address=cluster.address, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}})
        spec = JobSpec(input_uri=str(root / "in"), output_uri=str(root / "out"), task="box",
                       prior=prior, steps=4, batch_size=2, shard_size=4, num_actors=2,
                       max_inflight_batches=2)
        info = validate_job(spec)
        plan = make_plan(spec.input, spec.output)
        pool = ActorPool(spec.runtime, worker_kwargs(spec, info))
        pool.wait_ready()
        first = run_shard(plan.shards[0], spec, info, pool)

        removed = threading.Event()

        def remove_soon() -> None:
            time.sleep(1.0)
            cluster.remove_node(worker)
            removed.set()

        remover = threading.Thread(target=remove_soon)
        with ThreadPoolExecutor(2) as ex:
            futures = [ex.submit(run_shard, s, spec, info, pool) for s in plan.shards[1:]]
            remover.start()
            rest = [f.result() for f in futures]
        remover.join()
        return {"worker_node": worker.node_id, "head_node": cluster.head_node.node_id,
                "first": first, "rest": rest, "removed_mid_run": removed.is_set() and any(
                    r["seconds"] > 1.0 for r in rest)}
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1], sys.argv[2])), flush=True)

"""CPU of one Celery publish of the web side (cases.tasks.enqueue_classification of one image), per broker, in-process.

Django with the embedded settings (no database is touched: a publish only talks to the broker), the project's
Celery app pointed at each --broker-url in turn (as production does: CELERY_* settings of hematovision/settings/
base.py, no eager tasks). Per broker: a warm-up (the first publish imports the transport and connects), then
--rounds rounds of --publishes publishes, each round's process CPU (time.process_time) and wall time per publish;
nothing consumes, and the broker's tasks queue is emptied before and after (Redis: the whole database number;
RabbitMQ: the `celery` queue of the URL's virtual host). --top N adds the top cProfile entries of one more round.

    nice -n 19 .venv/bin/python bench/publish_cpu.py --broker-url redis://127.0.0.1:6379/9 \\
        --broker-url amqp://guest:guest@127.0.0.1:5672/hbroker --json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time

from _in_process import setup_django


def empty(broker_url: str) -> None:
    from e2e import broker_kind, purge_amqp_queue

    if broker_kind(broker_url) == "amqp":
        purge_amqp_queue(broker_url)
    else:
        import redis

        client = redis.Redis.from_url(broker_url)
        client.flushdb()
        client.close()


def point_app_at(broker_url: str) -> None:
    """As the fault tests' project_celery_sends_to: a broker URL, no eager tasks, no pooled connection of the last."""
    from hematovision.celery import app, drop_broker_connections

    drop_broker_connections()
    app.conf.update(broker_url=broker_url, task_always_eager=False)


def measure(broker_url: str, *, publishes: int, rounds: int, warm_up: int, top: int) -> dict:
    from cases.tasks import enqueue_classification

    empty(broker_url)
    point_app_at(broker_url)
    for number in range(warm_up):
        assert enqueue_classification(image_ids=[number + 1]) == 1, "the warm-up publish failed"
    cpu_ms, wall_ms = [], []
    for _ in range(rounds):
        cpu, wall = time.process_time(), time.perf_counter()
        for number in range(publishes):
            enqueue_classification(image_ids=[number + 1])
        cpu_ms.append((time.process_time() - cpu) * 1000 / publishes)
        wall_ms.append((time.perf_counter() - wall) * 1000 / publishes)
    profile_text = None
    if top:
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        for number in range(publishes):
            enqueue_classification(image_ids=[number + 1])
        profiler.disable()
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(top)
        profile_text = stream.getvalue()
    empty(broker_url)
    from e2e import broker_kind

    return {
        "broker": broker_kind(broker_url),
        "publishes_per_round": publishes,
        "cpu_ms_per_publish_rounds": [round(value, 3) for value in cpu_ms],
        "cpu_ms_per_publish_median": round(statistics.median(cpu_ms), 3),
        "wall_ms_per_publish_median": round(statistics.median(wall_ms), 3),
        "profile": profile_text,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker-url", action="append", required=True, help="a broker to publish to (repeatable)")
    parser.add_argument("--publishes", type=int, default=500, help="publishes per round (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per broker (default 3)")
    parser.add_argument("--warm-up", type=int, default=20, help="publishes before the rounds (default 20)")
    parser.add_argument("--top", type=int, default=0, help="cProfile entries of one more round (default 0: none)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    arguments = parser.parse_args()
    setup_django(prefix="hv-publish-cpu-")
    results = [
        measure(
            url, publishes=arguments.publishes, rounds=arguments.rounds, warm_up=arguments.warm_up, top=arguments.top
        )
        for url in arguments.broker_url
    ]
    summary = {"results": results, "load_average_at_end": [round(value, 2) for value in os.getloadavg()]}
    if arguments.json:
        print(json.dumps(summary))
        return 0
    for result in results:
        print(
            f"{result['broker']}: {result['cpu_ms_per_publish_median']} ms CPU per publish "
            f"(rounds {result['cpu_ms_per_publish_rounds']}), wall {result['wall_ms_per_publish_median']} ms"
        )
        if result["profile"]:
            print(result["profile"])
    print(f"load average at end: {summary['load_average_at_end']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The markdown report and PNG plots of ``featurestream bench pipeline``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_pipeline_report"]

# Goals on a 2-core machine with broker, Redis and engine on it.
GOAL_SHARE_OF_CEILING = 0.60
GOAL_OVER_BASELINE = 10.0
GOAL_FRESHNESS_P99_MS = 250.0
GOAL_SERVING_SPEEDUP = 5.0
GOAL_SERVING_P99_MS = 5.0
GOAL_STATE_BYTES = 1024


def _met(ok: bool, measurable: bool = True) -> str:
    """A goal's verdict; a figure the measurement cannot support is never "met"."""
    if not measurable:
        return "**not measurable in this run**"
    return "met" if ok else "**not met**"


def _plots(results: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [
        "(a) consume + decode",
        "(b) featurestream, 1 process",
        "(b) featurestream, 2 processes",
    ]
    rates = [results["ceiling"]["events_per_s"]]
    rates += [e["events_per_s"] for e in results["engine"]]
    names.append("(c) Feast-docs baseline")
    rates.append(results["baseline"]["events_per_s"])
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.barh(names[::-1], rates[::-1], color=["#999", "#2a7", "#2a7", "#36c"][::-1])
    ax.bar_label(bars, labels=[f"{r:,}" for r in rates[::-1]], padding=3)
    ax.set_xlabel("events/s")
    ax.set_title("Throughput, user_click_stats (same machine, same run)")
    ax.set_xlim(0, max(rates) * 1.25)
    fig.tight_layout()
    fig.savefig(out_dir / "pipeline-throughput.png", dpi=110)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for run, color in ((results["freshness"], "#2a7"), (results["freshness_light"], "#7c4")):
        lat = run["latencies_ms"]
        left.plot(
            lat,
            [(i + 1) / len(lat) for i in range(len(lat))],
            color=color,
            label=f"{run['target_rate']:,} events/s",
        )
    left.axvline(GOAL_FRESHNESS_P99_MS, color="#c33", linestyle="--", label="goal: p99 250 ms")
    left.set_xlabel("produce call -> readable via featurestream serve (ms, log)")
    left.set_ylabel("fraction of probes")
    left.set_xscale("log")
    left.set_title("Freshness (CDF over probes)")
    left.legend(loc="lower right")
    serving = results["serving"]
    quantiles = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)]
    for name, color in (
        ("feast serve -w 2 --no-access-log", "#36c"),
        ("featurestream serve --workers 2", "#2a7"),
    ):
        for load, style in (("max", "-"), ("at_1000_rps", "--")):
            run = serving[name][load]
            right.plot(
                [run[q] for q, _ in quantiles],
                [p for _, p in quantiles],
                style,
                marker="o",
                color=color,
                label=f"{name.split(' -')[0]}, {'full speed' if load == 'max' else '1,000 req/s'}",
            )
    right.set_xscale("log")
    right.set_xlabel("request latency (ms, log scale)")
    right.set_title("Serving latency quantiles (wrk)")
    right.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_dir / "pipeline-latency.png", dpi=110)
    plt.close(fig)
    return ["pipeline-throughput.png", "pipeline-latency.png"]


def _freshness_bound(fresh: dict[str, Any]) -> str:
    """What the CPU and broker figures of a freshness run say about its bound."""
    if fresh["p99_ms"] <= GOAL_FRESHNESS_P99_MS:
        return ""
    cores = fresh["cores_busy"]
    busy = sum(cores.values())
    return (
        f" At this rate the broker path alone (produce -> plain consumer) had p99 "
        f"{fresh['broker_only']['p99_ms']} ms, and the components kept {busy:.2f} of the "
        f"machine's cores busy, the engine {cores['engine']} of them: sharing the 2 cores "
        "with the broker, the load generator and the server, the engine fell behind the "
        "arriving events, and the latency grew through the run."
    )


def write_pipeline_report(results: dict[str, Any], out_dir: Path) -> None:
    """Write ``pipeline.md`` and the plots from the results of one run."""
    images = _plots(results, out_dir)
    m = results["machine"]
    ceiling, base = results["ceiling"], results["baseline"]
    docs = results["baseline_docs_clock"]
    one, two = (next(e for e in results["engine"] if e["processes"] == n) for n in (1, 2))
    fresh, mem = results["freshness"], results["memory"]
    per_entity = mem["engine_rss_bytes_per_entity"]  # <= 0: the run cannot tell it
    serving = results["serving"]
    feast_max = serving["feast serve -w 2 --no-access-log"]["max"]
    ours_max = serving["featurestream serve --workers 2"]["max"]
    ours_paced = serving["featurestream serve --workers 2"]["at_1000_rps"]
    backfill = results["backfill"]
    ratios = results["ratios"]
    share = ratios["engine_2p_over_ceiling"]
    steady = all(e.get("rate_basis", "steady") == "steady" for e in results["engine"])
    over_base = ratios["engine_2p_over_baseline"] or 0.0
    lines = [
        "# Pipeline benchmark\n",
        f"`{results['command']}`\n",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB, Python {m['python']}, "
        f"{m['platform']}; {m['when']}. Broker (Tansu), Redis, engine, load generator and "
        "servers all on this machine; all figures from this one run.\n",
        f"Input: {results['produce']['events']:,} clicks of the demo stream "
        f"({results['produce'].get('users', 100_000):,} Zipf users in sessions, event times over "
        f"50 minutes) in a 4-partition topic, produced at "
        f"{results['produce']['events_per_s']:,} events/s.\n",
        "## Throughput\n",
        "| | events/s | notes |",
        "|---|---|---|",
        f"| (a) consume + decode only (confluent-kafka + fastavro, 1 process) | "
        f"{ceiling['events_per_s']:,} | the ceiling |",
        f"| (b) `featurestream run`, 1 process | {one['events_per_s']:,} | "
        f"{one['events_per_s_with_start']:,} with process start ({one['start_seconds']} s) |",
        f"| (b) `featurestream run --processes 2` | **{two['events_per_s']:,}** | "
        f"{two['events_per_s_with_start']:,} with process start ({two['start_seconds']} s) |",
        f"| (c) Feast-docs baseline (Bytewax KafkaSource, sliding windows, "
        f"`FeatureStore.push` online and offline) | {base['events_per_s']:,} | over the first "
        f"{base['events']:,} clicks; windows close on input |",
        f"| (c') the same with `EventClock` as the docs leave it (wall-clock wake-ups) | "
        f"{docs['events_per_s']:,} | over the first {docs['events']:,} clicks |",
        "",
        f"(b) counts from the first progress the engine writes online to the last (Redis "
        f"polled every 20 ms): tiles in Redis and the offline log written for every event. "
        f"b/a = **{share:.0%}** (goal {GOAL_SHARE_OF_CEILING:.0%}: "
        f"{_met(share >= GOAL_SHARE_OF_CEILING, steady)}); "
        f"b/c = **{over_base:.1f}x** (goal {GOAL_OVER_BASELINE:.0f}x: "
        f"{_met(over_base >= GOAL_OVER_BASELINE, steady)}).\n",
        *(
            []
            if steady
            else [
                "**This run was too short for a steady rate**: fewer than 3 progress samples "
                "over less than 0.5 s. Its (b) rates count every event from the last poll that "
                "saw no progress to the end, so they include up to one poll interval of "
                "start-up; the goals above are not judged on them.\n"
            ]
        ),
        f"![throughput]({images[0]})\n",
        "## Freshness\n",
        f"Clicks produced at a fixed rate while `featurestream run --processes "
        f"{fresh['engine_processes']}` tails the topic; every 50 ms a probe click of a new "
        "user is timed from its produce call until `featurestream serve` returns "
        "`clicks_last_5min` = 1 for that user (polled every 2 ms). The same probes are timed "
        "by a plain consumer too (the broker's part: produce -> consume). Producers: acks=all, "
        "linger 5 ms, not idempotent (with the idempotent producer the local broker, Tansu "
        "0.6, holds ~2% of produce requests for ~500 ms).\n",
        "| rate (achieved) | probes | p50 | p90 | p99 | broker only p50 / p99 | cores busy |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in (fresh, results["freshness_light"]):
        cores = ", ".join(f"{k} {v}" for k, v in run["cores_busy"].items())
        b = run["broker_only"]
        lines.append(
            f"| {run['target_rate']:,}/s ({run['achieved_rate']:,}/s) | {run['probes']} "
            f"({run['probes_never_readable']} never readable; {run['poll_errors']} polls "
            f"refused) | {run['p50_ms']} ms | "
            f"{run['p90_ms']} ms | **{run['p99_ms']} ms** | {b['p50_ms']} / {b['p99_ms']} ms | "
            f"{cores} |"
        )
    lines += [
        "",
        f"The first row is half of (b)'s best rate: p99 {fresh['p99_ms']} ms (goal <= "
        f"{GOAL_FRESHNESS_P99_MS:.0f} ms: {_met(fresh['p99_ms'] <= GOAL_FRESHNESS_P99_MS)}).",
        _freshness_bound(fresh) + "\n",
        f"![latency]({images[1]})\n",
        "## Serving\n",
        "`POST /get-online-features`, one random user per request, the whole `recommender_v1` "
        "service, wrk on the same machine (details in `serving.md`).\n",
        "| server | load | req/s | p50 ms | p99 ms | p99.9 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("feast serve -w 2 --no-access-log", "featurestream serve --workers 2"):
        for load, label in (("max", "full speed, 8 connections"), ("at_1000_rps", "1,000 req/s")):
            r = serving[name][load]
            lines.append(
                f"| `{name}` | {label} | {r['req_per_s']:,} | {r['p50']} | {r['p99']} | "
                f"{r['p999']} |"
            )
    speedup = ours_max["req_per_s"] / feast_max["req_per_s"] if feast_max["req_per_s"] else 0.0
    lines += [
        "",
        f"req/s **{speedup:.1f}x** `feast serve` (goal {GOAL_SERVING_SPEEDUP:.0f}x: "
        f"{_met(speedup >= GOAL_SERVING_SPEEDUP)}); p99 at 1,000 req/s **{ours_paced['p99']} ms** "
        f"(goal < {GOAL_SERVING_P99_MS:.0f} ms: "
        f"{_met(ours_paced['p99'] < GOAL_SERVING_P99_MS)}).\n",
        "## Memory\n",
        f"{mem['active_entities']:,} users with 2 clicks each, 2 minutes apart (both in every "
        f"window of `user_click_stats`: 4 aggregations), one engine process:\n",
        f"- engine RSS grows by **{mem['engine_rss_bytes_per_entity']:,} B per active entity** "
        f"for this view, from {mem['marginal_from_entities']:,} active entities "
        f"({mem['marginal_from_rss_bytes'] / 2**20:,.0f} MiB) to all "
        f"({mem['engine_rss_bytes'] / 2**20:,.0f} MiB; "
        f"{mem['engine_rss_bytes_per_entity_total']:,} B per entity including the process's "
        f"fixed memory). Goal <= {GOAL_STATE_BYTES:,} B: "
        f"{_met(per_entity <= GOAL_STATE_BYTES, per_entity > 0)}",
        f"- Redis: **{mem['redis_bytes_per_entity']:,} B per entity** "
        f"({mem['redis_keys']:,} keys)\n",
        "## Backfill\n",
        f"`featurestream backfill` from one Parquet file of {backfill['events']:,} clicks, no "
        f"Kafka (details in `backfill.md`): **{backfill['offline']['events_per_s']:,} events/s** "
        f"into the offline log, {backfill['offline_and_online']['events_per_s']:,} events/s "
        "with the online tiles too.\n",
    ]
    (out_dir / "pipeline.md").write_text("\n".join(lines) + "\n")

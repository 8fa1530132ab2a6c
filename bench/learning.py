"""Does the loop learn? A simulation through the real pipeline, measured against an oracle.

Scenes go through Kafka and the five agents as separate processes, one attempt per shot (each
shot is one decision of the policy), at 128x128. The renders are the procedural renderer's, and
**its response to each modifier per context is the ground truth**: the oracle table below is
measured offline, in this process, by rendering every planned shot with every modifier (two
seeds each) and scoring it with the same scorer; the learner never sees it. A second run uses
the ``simulated`` render backend (named as such, ``render/simulated.py``): the same frames, but
each modifier's response per context comes from a seeded random table, so the result does not
hinge on one hand-written response.

Runs, each on its own topics, groups and database:

- Thompson sampling (the product), uniform random, and a fixed prompt (``fixed:clean-cel``,
  the neutral modifier), all on the procedural renderer;
- Thompson sampling without borrowed priors (``TOWER_BORROWED_STRENGTH=0``), and with the memory
  prior in their place (``TOWER_MEMORY_PRIOR_STRENGTH=2``): a scene first requested late (from
  round 7) shows whether its contexts learn faster when they borrow, or remember;
- Thompson sampling on the simulated model, then a **model change** (``TOWER_SIMULATED_MODEL=2``,
  a new workflow version that scores worse): the regression alert must fire on
  ``quality.alerts`` and the policy must recover on the new model.

Figures (``docs/BENCHMARKS.md``) and the learning curve (``docs/learning-curve.png``) come from
``make bench-learning``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import asyncpg
import numpy as np
import torch

from agents.registry import STAGE_NAMES
from bench.parallel import Run
from bench.report import write_section
from director.learning import context_parts
from director.modifiers import MODIFIERS
from director.planner import plan_scene
from director.refiner import pattern_context, refine
from eventlog.follow import follow_scene, produce, scene_envelope
from events.models import SceneRequested, ShotPlanned
from foundation.kafka import read_topic
from foundation.settings import Settings
from render import procedural, simulated
from scoring import CompositeWeights, Scorer, ScorerConfig, ShotInput

SIZE = 128
SCENES = [
    ("Kai runs through the city at night", ["Kai"]),
    ("Create a scene where Kai fights the dragon", ["Kai", "Dragon"]),
    ("Mira waits at the station in the rain", ["Mira"]),
    ("Kai and Mira talk in the cafe at noon", ["Kai", "Mira"]),
    ("The dragon lands on the castle tower at dusk", ["Dragon"]),
    ("Kai chases the thief across the rooftops", ["Kai"]),
]
LATE_SCENE = ("A wolf howls on the cliff at dawn", ["Wolf"])
LATE_FROM_ROUND = 7
FIXED = "clean-cel"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def requests(round_: int, run: str) -> list[SceneRequested]:
    scenes = SCENES + ([LATE_SCENE] if round_ >= LATE_FROM_ROUND else [])
    return [SceneRequested(scene_id=f"{run}-r{round_}-s{i}", session_id=f"bench-{run}", description=d, characters=c,
                           max_attempts=1) for i, (d, c) in enumerate(scenes)]


def context_key(context: str) -> str:
    """A context without its workflow: the oracle tables are per render model."""
    parts = context_parts(context)
    return f"{parts['camera_angle']}|{parts['mood']}|{parts['lighting']}"


SAMPLES: dict[str, dict[tuple[str, str], list[float]]] = {}  # workflow -> (context, modifier) -> composites


def oracle_table(model: int | None, seeds: int = 2) -> dict[str, dict[str, float]]:
    """Mean composite per context (without workflow) and modifier, measured offline: the truth.
    The individual scores are kept in :data:`SAMPLES` for :func:`reward_choice`."""
    scorer = Scorer(ScorerConfig(device="cpu", weights=CompositeWeights()))
    totals: dict[tuple[str, str], list[float]] = defaultdict(list)
    workflow = simulated.workflow(model) if model else procedural.WORKFLOW
    for description, characters in [*SCENES, LATE_SCENE]:
        plan = plan_scene(SceneRequested(scene_id="oracle", session_id="o", description=description,
                                         characters=characters), fps=Settings().render_fps)
        for shot in plan.shots:
            for seed in range(seeds):
                planned = ShotPlanned(scene_id=f"oracle-{seed}-{description[:12].replace(' ', '-')}", session_id="o",
                                      attempt=1, max_attempts=1, quality_threshold=0.5, shot=shot,
                                      overall_mood=plan.overall_mood, lighting_suggestions=plan.lighting_suggestions)
                for modifier in MODIFIERS:
                    event = refine(planned, {}, width=SIZE, height=SIZE, workflow=workflow, learner_version="1",
                                   policy=f"fixed:{modifier}")
                    response = simulated.response(event.prompt.context, modifier, model) if model else None
                    frames = np.stack(list(procedural.iter_frames(event, response)))
                    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
                    [score] = scorer.score_shots([ShotInput(frames=tensor, expected_motion=shot.expected_motion)])
                    totals[(context_key(pattern_context(shot, workflow)), modifier)].append(score.composite)
    scorer.close()
    SAMPLES[workflow] = dict(totals)
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for (context, modifier), values in totals.items():
        table[context][modifier] = statistics.fmean(values)
    return dict(table)


async def pipeline_run(base: Settings, label: str, rounds: int, env: dict[str, str],
                       change_after: int | None = None) -> dict:
    """Shots in the order scored: (context, modifier, composite, round)."""
    async with Run(base, label, TOWER_RENDER_WIDTH=str(SIZE), TOWER_RENDER_HEIGHT=str(SIZE), **env) as run:
        run.workers.start(*STAGE_NAMES)
        shots: list[tuple[str, str, float, int]] = []
        for round_ in range(1, rounds + 1):
            if change_after is not None and round_ == change_after + 1:
                # The model changes: renderer and refiner restart on model 2 (a new workflow version).
                for stage in ("renderer", "refiner"):
                    run.workers.stop(stage)
                run.workers.env = {**run.workers.env, "TOWER_SIMULATED_MODEL": "2"}
                run.workers.start("renderer", "refiner")
            batch = requests(round_, f"{label}{run.unique}")
            await produce(run.settings, [scene_envelope(r) for r in batch])
            await run.workers.watch(asyncio.gather(*(follow_scene(run.settings, r.scene_id, timeout_s=600) for r in batch)))
            print(f"bench: {label} round {round_}/{rounds}", file=sys.stderr)
        conn = await asyncpg.connect(run.database_url)
        try:
            rows = await conn.fetch("SELECT context, modifier, composite, scene_id FROM scores WHERE status = 'ok'"
                                    " ORDER BY scored_at, event_id")
        finally:
            await conn.close()
        alerts = await read_topic(base.kafka_bootstrap, run.settings.topic("quality.alerts"), timeout_s=5)
    for r in rows:
        shots.append((r["context"], r["modifier"], r["composite"], int(r["scene_id"].split("-r")[-1].split("-")[0])))
    return {"shots": shots, "alerts": [a.value.decode() for a in alerts]}


def regret_curve(shots: list[tuple[str, str, float, int]], tables: dict[str, dict[str, dict[str, float]]]) -> list[float]:
    """Expected regret of each decision: the oracle's best in its context minus the chosen modifier's mean."""
    out = []
    for context, modifier, _, _ in shots:
        table = tables[context_parts(context)["workflow"]][context_key(context)]
        out.append(max(table.values()) - table[modifier])
    return out


def fitted_exponent(cumulative: list[float], start: int = 20) -> float:
    """b in cumulative regret ~ a * t^b, by least squares on log-log (t >= start)."""
    points = [(math.log(t), math.log(r)) for t, r in enumerate(cumulative, start=1) if t >= start and r > 0]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def summary(name: str, shots: list, tables: dict) -> dict:
    regret = regret_curve(shots, tables)
    cumulative = list(np.cumsum(regret))
    last = shots[-50:]
    oracle_last = [max(tables[context_parts(c)["workflow"]][context_key(c)].values()) for c, _, _, _ in last]
    expected_last = [tables[context_parts(c)["workflow"]][context_key(c)][m] for c, m, _, _ in last]
    return {
        "name": name, "shots": len(shots), "contexts": len({c for c, _, _, _ in shots}),
        "last50": statistics.fmean(s[2] for s in last), "last50_expected": statistics.fmean(expected_last),
        "oracle_last50": statistics.fmean(oracle_last), "regret": cumulative[-1], "exponent": fitted_exponent(cumulative),
        "cumulative": cumulative, "scores": [s[2] for s in shots],
    }


def late_regrets(shots: list, tables: dict, first: int | None = None) -> list[float]:
    """Expected regret of the late scene's shots in contexts first seen from round 7, in order
    (the first ``first`` of them)."""
    early = {c for c, _, _, r in shots if r < LATE_FROM_ROUND}
    regret = regret_curve(shots, tables)
    late = [g for (c, _, _, r), g in zip(shots, regret, strict=True) if r >= LATE_FROM_ROUND and c not in early]
    return late[:first] if first is not None else late


def late_context_regret(shots: list, tables: dict) -> tuple[float, int]:
    """Mean expected regret of the late scene's shots (its contexts first seen from round 7)."""
    late = late_regrets(shots, tables)
    return (statistics.fmean(late) if late else float("nan")), len(late)


#: The priors a context first seen late starts from (each a run of Thompson sampling).
PRIOR_ARMS = {
    "Thompson": {},  # borrowed priors (the default)
    "Thompson, no borrowing": {"TOWER_BORROWED_STRENGTH": "0"},
    "Thompson, memory prior": {"TOWER_BORROWED_STRENGTH": "0", "TOWER_MEMORY_PRIOR_STRENGTH": "2"},
    "Thompson, borrowed + memory": {"TOWER_MEMORY_PRIOR_STRENGTH": "2"},
}
PRIOR_NAMES = {"Thompson": "borrowed priors", "Thompson, no borrowing": "no prior",
               "Thompson, memory prior": "memory prior", "Thompson, borrowed + memory": "both"}


def prior_lines(raw: dict, tables: dict, first: int = 20) -> list[str]:
    """The late context's regret over its first ``first`` shots per prior, mean +- standard error."""
    rows = []
    for name, label in PRIOR_NAMES.items():
        late = late_regrets(raw[name]["shots"], tables, first)
        se = statistics.stdev(late) / math.sqrt(len(late)) if len(late) > 1 else float("nan")
        rows.append(f"| {label} (`{name}`) | {len(late)} | {statistics.fmean(late):.3f} +- {se:.3f} | {sum(late):.2f} |")
    return ["| prior | late shots | mean expected regret (+- s.e.) | regret over them |", "|---|---:|---:|---:|", *rows]


def reward_choice(samples: dict[tuple[str, str], list[float]], table: dict[str, dict[str, float]],
                  threshold: float = 0.6, steps: int = 300, repeats: int = 40) -> dict[str, tuple[float, float]]:
    """Composite score or passing the threshold as the reward? Thompson sampling on the measured
    scores (each step: a context at random, a measured score of the chosen modifier there),
    learning from one reward or the other; (expected composite, pass rate) of its last 50 choices."""
    from director.learning import Posterior, thompson_choice

    contexts = sorted(table)
    out = {}
    for reward in ("composite", "pass"):
        worth, passes = [], []
        for repeat in range(repeats):
            rng = np.random.default_rng(repeat)
            posteriors: dict[str, dict[str, Posterior]] = defaultdict(dict)
            for step in range(steps):
                context = contexts[rng.integers(len(contexts))]
                choice = thompson_choice(posteriors[context], list(MODIFIERS), int(rng.integers(2**62))).modifier
                score = float(rng.choice(samples[(context, choice)]))
                r = score if reward == "composite" else float(score >= threshold)
                posteriors[context][choice] = posteriors[context].get(choice, Posterior()).updated(r)
                if step >= steps - 50:
                    worth.append(table[context][choice])
                    passes.append(statistics.fmean(s >= threshold for s in samples[(context, choice)]))
        out[reward] = (statistics.fmean(worth), statistics.fmean(passes))
    return out


def plot(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), dpi=110)
    window = 25
    for name, s in runs.items():
        scores = np.array(s["scores"])
        smooth = np.convolve(scores, np.ones(window) / window, mode="valid")
        left.plot(np.arange(window, len(scores) + 1), smooth, label=name)
        right.plot(np.arange(1, len(s["cumulative"]) + 1), s["cumulative"], label=name)
    left.set_title(f"Score per shot (moving mean of {window})")
    left.set_xlabel("shot")
    left.set_ylabel("composite score")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    right.set_title("Cumulative expected regret vs the oracle")
    right.set_xlabel("shot")
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


async def run_priors(rounds: int) -> str:
    """Only the prior arms (``--priors-only``): the memory prior against borrowed priors, no prior, and both."""
    base = Settings()
    started = time.monotonic()
    tables = {procedural.WORKFLOW: oracle_table(None)}
    label = uuid.uuid4().hex[:4]
    raw = {name: await pipeline_run(base, f"p{i}{label}", rounds, env) for i, (name, env) in enumerate(PRIOR_ARMS.items())}
    return "\n".join([
        "## Memory prior against borrowed priors (`python -m bench.learning --priors-only`)",
        "",
        f"Command: `python -m bench.learning --priors-only --rounds {rounds}`. Machine: {os.cpu_count()} cores. "
        f"Date: {time.strftime('%Y-%m-%d')}; {time.monotonic() - started:.0f} s in all. {len(PRIOR_ARMS)} runs of Thompson sampling "
        f"through the real pipeline as in the learning benchmark, {len(SCENES)} scenes per round plus a late scene "
        f"from round {LATE_FROM_ROUND} ({LATE_SCENE[0]!r}), whose contexts no earlier shot had: each run starts them "
        "from another prior. Regret is expected (the oracle table's best minus the choice's worth).",
        "",
        *prior_lines(raw, tables),
    ])


async def run(rounds: int, change_rounds: int) -> str:
    base = Settings()
    started = time.monotonic()
    print("bench: oracle tables (offline renders and scores)", file=sys.stderr)
    tables = {procedural.WORKFLOW: oracle_table(None), simulated.workflow(1): oracle_table(1),
              simulated.workflow(2): oracle_table(2)}
    label = uuid.uuid4().hex[:4]
    raw = {
        "Thompson": await pipeline_run(base, f"ts{label}", rounds, {}),
        "uniform": await pipeline_run(base, f"un{label}", rounds, {"TOWER_REFINER_POLICY": "uniform"}),
        f"fixed ({FIXED})": await pipeline_run(base, f"fx{label}", rounds, {"TOWER_REFINER_POLICY": f"fixed:{FIXED}"}),
        "Thompson, no borrowing": await pipeline_run(base, f"nb{label}", rounds, PRIOR_ARMS["Thompson, no borrowing"]),
        "Thompson, memory prior": await pipeline_run(base, f"mp{label}", rounds, PRIOR_ARMS["Thompson, memory prior"]),
        "Thompson, borrowed + memory": await pipeline_run(base, f"bm{label}", rounds,
                                                          PRIOR_ARMS["Thompson, borrowed + memory"]),
        "Thompson, simulated model": await pipeline_run(
            base, f"sm{label}", rounds + change_rounds, {"TOWER_RENDER_BACKEND": "simulated"}, change_after=rounds),
    }
    runs = {name: summary(name, r["shots"], tables) for name, r in raw.items() if name != "Thompson, simulated model"}
    model_run = raw["Thompson, simulated model"]
    before = [s for s in model_run["shots"] if s[3] <= rounds]
    after = [s for s in model_run["shots"] if s[3] > rounds]
    runs["simulated model 1"] = summary("simulated model 1", before, tables)
    runs["simulated model 2 (after the change)"] = summary("simulated model 2", after, tables)
    late_with, late_n = late_context_regret(raw["Thompson"]["shots"], tables)
    late_without, _ = late_context_regret(raw["Thompson, no borrowing"]["shots"], tables)
    plot({k: v for k, v in runs.items() if "simulated" not in k}, DOCS / "learning-curve.png")
    best_fixed = {wf: max(MODIFIERS, key=lambda m: statistics.fmean(t[c][m] for c in t)) for wf, t in tables.items()}
    best_fixed_mean = statistics.fmean(
        tables[procedural.WORKFLOW][context_key(c)][best_fixed[procedural.WORKFLOW]] for c, _, _, _ in raw["Thompson"]["shots"])

    rewards = {name: reward_choice(SAMPLES[wf], tables[wf]) for name, wf in
               (("procedural", procedural.WORKFLOW), ("simulated model 1", simulated.workflow(1)))}
    rows = []
    for name, s in runs.items():
        share = s["last50_expected"] / s["oracle_last50"]
        rows.append(f"| {name} | {s['shots']} | {s['contexts']} | {s['last50']:.3f} | {s['last50_expected']:.3f} | "
                    f"{s['oracle_last50']:.3f} | **{share:.0%}** | {s['regret']:.1f} | {s['exponent']:.2f} |")
    ts = runs["Thompson"]
    alerts = model_run["alerts"]
    return "\n".join([
        "## Learning (`make bench-learning`)",
        "",
        f"Command: `make bench-learning` (`python -m bench.learning --rounds {rounds} --change-rounds {change_rounds}`). "
        f"Machine: {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}. "
        f"Date: {time.strftime('%Y-%m-%d')}; {time.monotonic() - started:.0f} s in all. Through the real pipeline "
        f"(Kafka, the five agents as processes, PostgreSQL), {SIZE}x{SIZE} frames, one attempt per shot; "
        f"{len(SCENES)} scenes per round (plus a late scene from round {LATE_FROM_ROUND}). The oracle always takes "
        "the best modifier of the shot's context, by a table measured offline from the same renderer and scorer "
        "(two seeds per shot and modifier), which the learner never sees. The figures use each decision's "
        "*expected* score from that table (what the choice is worth) beside the realised scores.",
        "",
        "| run | shots | contexts | last 50: realised | last 50: expected | last 50: oracle | expected / oracle | "
        "cumulative regret | regret exponent |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"- **Last 50 shots**: Thompson sampling's choices are worth {ts['last50_expected'] / ts['oracle_last50']:.0%} "
        f"of the oracle's (goal 90%); on the simulated model {runs['simulated model 1']['last50_expected'] / runs['simulated model 1']['oracle_last50']:.0%}.",
        f"- **Regret grows sublinearly** when the fitted exponent b of cumulative regret ~ t^b is under 1: "
        f"Thompson {ts['exponent']:.2f}, uniform {runs['uniform']['exponent']:.2f} (linear: it never learns).",
        f"- **Baselines**, run the same way: uniform random {runs['uniform']['last50_expected']:.3f} and the fixed "
        f"prompt {runs[f'fixed ({FIXED})']['last50_expected']:.3f} expected over the last 50, against Thompson's "
        f"{ts['last50_expected']:.3f}. The best single modifier in hindsight ({best_fixed[procedural.WORKFLOW]}, "
        f"chosen with the oracle's table) would average {best_fixed_mean:.3f} over the same shots.",
        f"- **Borrowed priors**: the late scene's {late_n} shots in contexts first seen from round {LATE_FROM_ROUND} "
        f"had a mean expected regret of {late_with:.3f} with borrowed priors and {late_without:.3f} without.",
        "- **The memory prior** (`TOWER_MEMORY_PRIOR_STRENGTH=2`, borrowing off: the nearest remembered first "
        "attempts of the same workflow lend each modifier up to two scores' worth) against borrowed priors alone and "
        "against no prior, and both together, over the late context's first 20 shots:",
        "",
        *prior_lines(raw, tables),
        "",
        f"- **Model change**: after {rounds} rounds on simulated model 1 the renderer moved to model 2 (a new "
        f"workflow version that scores worse). Regression alerts on `quality.alerts`: {len(alerts)}"
        + (f" (\"{json.loads(alerts[0])['reason']}\")" if alerts else "") + ". On model 2 the last 50 "
        f"shots were worth {runs['simulated model 2 (after the change)']['last50_expected'] / runs['simulated model 2 (after the change)']['oracle_last50']:.0%} "
        "of its oracle.",
        "",
        "",
        "**Reward: the composite score or passing the threshold?** Measured offline on the same scores (Thompson "
        "sampling over the measured per-shot scores, 300 decisions, 40 repeats; expected composite and pass rate "
        "of the last 50 choices):",
        "",
        "| response | reward = composite | reward = passed (>= 0.6) |",
        "|---|---:|---:|",
        *(f"| {name} | {r['composite'][0]:.3f} composite, {r['composite'][1]:.0%} pass | "
          f"{r['pass'][0]:.3f} composite, {r['pass'][1]:.0%} pass |" for name, r in rewards.items()),
        "",
        "Each reward wins on what it counts: learning from the composite gives the higher mean composite, "
        "learning from passing the higher pass rate. Tower keeps the composite: it is the quality the scorer "
        "measures, it tells a narrow failure from a bad one, and contexts where nothing passes (calm shots "
        "here) still learn which modifier is least bad, where a pass/fail reward is flat; a deployment that "
        "cares only about passing would choose the other. Only first attempts are credited "
        "(`director/escalation.py`): a retry is made because the shot failed, so its score would charge the "
        "retry's modifier for the shot's difficulty; retries' propensities are logged for `tower evaluate` "
        "all the same.",
        "",
        "![learning curve](learning-curve.png)",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=13, help="rounds of scenes per run (default 13: 300+ shots)")
    parser.add_argument("--change-rounds", type=int, default=8, help="rounds after the simulated model change")
    parser.add_argument("--priors-only", action="store_true",
                        help="only the memory prior against borrowed priors, no prior and both (four runs)")
    args = parser.parse_args()
    if args.priors_only:
        section = asyncio.run(run_priors(args.rounds))
        write_section("learning-priors", section)
    else:
        section = asyncio.run(run(args.rounds, args.change_rounds))
        write_section("learning", section)
    print(section)


if __name__ == "__main__":
    main()

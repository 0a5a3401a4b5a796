"""Data-parallel recording on torch.distributed (gloo, two processes) equals a single-process run."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from neuroloc import Localizer, StimulusSet
from neuroloc.models.loading import wrap_model
from neuroloc.record.distributed import (DistContext, gather_across_ranks, merge_across_ranks, shard_items,
                                         shard_stimuli)
from neuroloc.record.stats import StatsStore
from tests.tiny import tiny_model, tiny_tokenizer

SENTENCES = ["the quick brown fox jumps over the lazy dog", "she looked for the keys in the drawer",
             "sentences and strings are contrasted here", "the dog jumps over the fox", "what is the answer",
             "she didn't know that the keys were there", "the lazy dog looked elsewhere",
             "the fox looked for the answer", "keys and strings are in the drawer"]
NONWORDS = ["pome oy ree holily shourn", "ne sleoming whimp ree rere", "os ofuke pome shourn oy",
            "whimp holily ree ne os", "rere ofuke sleoming pome", "oy oy ree whimp", "shourn ne holily ofuke rere",
            "holily pome os", "ree rere whimp ne sleoming ofuke"]


def _stimuli() -> StimulusSet:
    return StimulusSet("toy", tuple(SENTENCES + NONWORDS), tuple(["S"] * 9 + ["N"] * 9), ("S", "N"))


def _localizer() -> Localizer:
    return Localizer(["residual", "mlp"], percent=5, batch_size=4)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    ctx = DistContext.from_env()
    assert (ctx.rank, ctx.world_size, ctx.backend) == (rank, world, "gloo")
    lm = wrap_model(tiny_model("llama"), tiny_tokenizer())
    shard = shard_stimuli(_stimuli(), ctx)
    localizer = _localizer()
    merged = merge_across_ranks(localizer.record(lm, shard), ctx)
    rows = gather_across_ranks([(rank, job) for job in shard_items(["a", "b", "c"], ctx)], ctx)
    merged.save(f"{out}.rank{rank}")  # every rank holds the merged statistics and every row
    torch.save(rows, f"{out}.rows{rank}")
    ctx.barrier()
    ctx.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one(tmp_path):
    out = str(tmp_path / "merged.safetensors")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    lm = wrap_model(tiny_model("llama"), tiny_tokenizer())
    single = _localizer().fit(lm, _stimuli())
    merged = StatsStore.load(out + ".rank0")
    other = StatsStore.load(out + ".rank1")
    assert other.state_dict().keys() == merged.state_dict().keys()
    for key, value in merged.state_dict().items():
        torch.testing.assert_close(other.state_dict()[key], value, rtol=0, atol=0)
    # every rank recorded its half: the counts add up to the whole set
    assert merged.count("S") == 9 and merged.count("N") == 9
    parallel = _localizer().fit_stats(merged, design=single.design_,
                                      widths={s.name: lm.layout.width(s.kind) for s in single.sites_})
    # float32 activations in other batch compositions: equal up to float32 rounding
    np.testing.assert_allclose(parallel.t_, single.t_, rtol=1e-5, atol=1e-5)
    assert parallel.units_.names() == single.units_.names()
    # independent jobs (lesion conditions): shared out, every one done once, gathered in rank order everywhere
    assert torch.load(out + ".rows0") == torch.load(out + ".rows1") == [(0, "a"), (0, "c"), (1, "b")]


def test_single_process_needs_no_launcher(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = DistContext.from_env()
    assert not ctx.enabled and ctx.is_main
    stimuli = _stimuli()
    assert shard_stimuli(stimuli, ctx) is stimuli
    store = StatsStore()
    assert merge_across_ranks(store, ctx) is store
    assert gather_across_ranks([1, 2], ctx) == [1, 2]


def test_shards_partition_the_stimuli():
    stimuli = _stimuli()
    shards = [shard_stimuli(stimuli, DistContext(rank=r, world_size=3)) for r in range(3)]
    texts = [t for s in shards for t in s.texts]
    assert sorted(texts) == sorted(stimuli.texts) and len(texts) == len(stimuli)
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1


def test_world_size_without_master_address_is_a_clear_error(monkeypatch):
    from neuroloc import NeurolocError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(NeurolocError, match="torchrun"):
        DistContext.from_env(backend="gloo")


def test_commands_that_do_not_share_work_refuse_a_launcher(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from neuroloc.cli import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    result = CliRunner().invoke(app, ["info", "--model", str(tmp_path / "anything")])
    assert result.exit_code == 2
    assert "error: rank 1: `neuroloc info` runs in one process: launch it without torchrun" in " ".join(result.output.split())

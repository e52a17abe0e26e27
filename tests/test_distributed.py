"""The training loop under torch.distributed (2 CPU processes, gloo): replicas stay identical, rank 0 writes."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from tests.conftest import make_tiny_clip
    from train.common import RunLogger
    from train.features import cached_text_features
    from train.train_maccap import MacCapTrainConfig, adaptor_config, train
    from zsc_core.adaptor import MacCapConfig
    from zsc_core.captioner import Captioner
    from zsc_core.lm import LMSpec, load_lm

    cfg = MacCapTrainConfig(corpus="world:30", adaptor=MacCapConfig(n_queries=4, d_model=32, n_heads=8, ffn_dim=64,
                                                                    n_cr=4), batch_size=16,
                            lr=3e-3, warmup=2, steps=12, save_every=6, eval_every=1000, eval_n=0,
                            run_dir=os.path.join(out_dir, "run"), out=os.path.join(out_dir, "run", "m.safetensors"))
    clip = make_tiny_clip(0)
    caps, feats = cached_text_features(clip, cfg.corpus, os.path.join(out_dir, f"f{rank}.safetensors"))
    # Different initial weights per rank: the loop must start every replica from rank 0's, as DDP does.
    cap = Captioner.build(clip, load_lm(LMSpec("tiny")), adaptor_config(cfg), seed=rank)
    import torch.distributed as dist
    losses = train(cfg, cap, caps, feats, RunLogger(os.path.join(out_dir, f"log{rank}.txt")))
    torch.save({"state": cap.adaptor.state_dict(), "losses": losses}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.heavy
def test_two_process_training_keeps_replicas_identical(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
    assert len(r0["losses"]) == 12 and r0["losses"] != r1["losses"]  # each rank saw its own half of the batch
    assert (tmp_path / "run" / "m.safetensors").exists() and (tmp_path / "run" / "state.pt").exists()
    assert "2 process(es)" in (tmp_path / "log0.txt").read_text()
    assert not (tmp_path / "log1.txt").exists() or "new run" not in (tmp_path / "log1.txt").read_text()

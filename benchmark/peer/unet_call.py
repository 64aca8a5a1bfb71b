"""One UNet call, timed in whichever environment runs this file: the project's (diffusers, peft and
transformers as pinned by diffexp) or the peer's (`.venv-trl`: TRL 0.23.1's versions). Both load
the same saved pipeline, attach the same LoRA (rank 4, gaussian init, to_q/k/v/out.0) and call
the UNet on the same inputs, so a difference is the libraries' code around the same arithmetic:

    python benchmark/peer/unet_call.py '{"pipeline": "/tmp/x/embedded", "batch": 16, "repeats": 5}'

Prints one JSON object on its last line: the library versions, the median seconds of a no-grad
CFG forward (2 x batch, as in sampling) and of a forward + backward through the LoRA weights
(as in a DDPO training step), and the operators that took the most time in one forward
(torch.profiler, CPU time), so the two environments' calls can be compared operator by operator.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch


def _context_length(pipeline: str) -> int:
    """The text encoder's context the pipeline was saved with (77 unless its tokenizer says)."""
    from pathlib import Path

    config = Path(pipeline) / "tokenizer" / "tokenizer_config.json"
    length = json.loads(config.read_text()).get("model_max_length", 77) if config.is_file() else 77
    return int(length) if length < 10_000 else 77


def main() -> None:
    import diffusers
    import peft
    import transformers
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    s = json.loads(sys.argv[1])
    torch.set_num_threads(s.get("threads", torch.get_num_threads()))
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(s["pipeline"], subfolder="unet").eval()
    unet.requires_grad_(False)
    lora = LoraConfig(
        r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out.0"]
    )
    unet.add_adapter(lora)
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    size, channels = unet.config.sample_size, unet.config.in_channels
    width = unet.config.cross_attention_dim
    batch = s["batch"]
    latents = torch.randn(2 * batch, channels, size, size)
    context = torch.randn(2 * batch, _context_length(s["pipeline"]), width)
    t = torch.full((2 * batch,), 500)

    def forward_no_grad():
        with torch.no_grad():
            return unet(latents, t, encoder_hidden_states=context).sample

    def forward_backward():
        out = unet(latents[:batch], t[:batch], encoder_hidden_states=context[:batch]).sample
        out.square().mean().backward()

    timings = {}
    for name, fn in (("forward_cfg_no_grad_s", forward_no_grad), ("forward_backward_s", forward_backward)):
        fn()  # warm-up
        times = []
        for _ in range(s.get("repeats", 5)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        timings[name] = statistics.median(times)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        forward_no_grad()
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    top = [{"op": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1000} for e in ops]
    print(
        json.dumps(
            {
                "versions": {
                    "diffusers": diffusers.__version__,
                    "peft": peft.__version__,
                    "transformers": transformers.__version__,
                    "torch": torch.__version__,
                },
                **timings,
                "operator_calls": sum(e.count for e in prof.key_averages()),
                "top_operators": top,
            }
        )
    )


if __name__ == "__main__":
    main()

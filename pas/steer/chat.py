"""Steered generation and an interactive chat.

How a vector is applied while generating is :func:`pas.steer.vector.gate`'s rule (phase
"generate"): a "last" vector steers every position that produces a token, an "all"
vector every position.
"""

from __future__ import annotations

import torch

from pas.steer.vector import steer


@torch.no_grad()
def generate(model, tokenizer, prompt: str | list[dict], vector=None, *, max_new_tokens: int = 128,
             system: str | None = None) -> str:
    """Greedy reply to ``prompt`` (a user message or a message list) with ``vector`` steering on."""
    messages = prompt if isinstance(prompt, list) else (
        ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}])
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    enc = {k: v.to(model.device) for k, v in enc.items()}
    with steer(model, vector, "generate"):
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def chat_loop(model, tokenizer, vector=None, *, max_new_tokens: int = 128, system: str | None = None) -> None:
    """Read user turns from stdin until EOF or 'exit'; keeps the conversation (after ``system``, if given)."""
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    print("pas chat: type a message ('exit' or Ctrl-D to quit)")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            print()
            return
        if text.lower() in ("exit", "quit"):
            return
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        reply = generate(model, tokenizer, messages, vector, max_new_tokens=max_new_tokens)
        messages.append({"role": "assistant", "content": reply})
        print(f"model> {reply}")

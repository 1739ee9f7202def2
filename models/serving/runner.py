"""The classifier runner: one implementation behind both Triton's python backend and ``LocalClient``.

Serving code paths that differ drift apart, and then "Triton says X, the test harness says Y"
becomes unanswerable. So the Triton model (``driftline.models.serving.triton_model``) and the in-process
client (``driftline.models.inference.local``) both construct a ``ClassifierRunner`` from the same exported
folder and call the same ``predict``; any difference between them is then the transport, not the
maths.

Loading: the encoder named in ``meta.json`` is loaded fresh (``load_encoder(..., fresh=True)``, a
private copy, because merging mutates it), the peft LoRA adapter is applied and merged into the base
weights with ``merge_and_unload`` (the served model is a plain ``BertModel``: no adapter indirection
per forward pass, so serving costs the same as the base encoder), and the Linear head is read from
``head.safetensors``. The head is applied to masked mean pooling, exactly as in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from driftline.models.artifacts import ADAPTER_DIR, HEAD_FILE, ArtifactMeta, read_meta
from driftline.models.encoders import load_encoder, mean_pool
from driftline.models.normalize import normalize_all
from driftline.models.serving.explain import TOP_K, attribution_scores, merge_to_words
from driftline.settings import get_settings


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What the runner says about one text (the fields of the Triton wire contract)."""

    label: str
    probabilities: list[float]  # in ``labels`` order
    explanation: list[tuple[str, float]] = field(default_factory=list)
    truncated: bool = False
    adapter_hash: str = ""


def configure_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op thread count from the argument, ``triton.torch_threads`` or leave it.

    A Triton CPU instance shares the machine with other instances and services; by default torch
    grabs every core per instance, which oversubscribes the CPU as soon as there are two instances.
    """
    if num_threads is None:
        num_threads = get_settings().triton.torch_threads
    if num_threads and num_threads > 0:
        torch.set_num_threads(num_threads)
    return torch.get_num_threads()


def _load_head(path: Path, hidden_size: int, num_labels: int) -> torch.nn.Linear:
    """Read the Linear head, tolerating a key prefix (``weight`` or ``head.weight``, ``classifier.*``)."""
    tensors = load_file(str(path))
    weight = next((t for k, t in tensors.items() if k.endswith("weight") and t.dim() == 2), None)
    bias = next((t for k, t in tensors.items() if k.endswith("bias") and t.dim() == 1), None)
    if weight is None or tuple(weight.shape) != (num_labels, hidden_size):
        shapes = {k: tuple(t.shape) for k, t in tensors.items()}
        raise ValueError(f"{path}: expected a ({num_labels}, {hidden_size}) weight, found {shapes}")
    head = torch.nn.Linear(hidden_size, num_labels, bias=bias is not None)
    with torch.no_grad():
        head.weight.copy_(weight.float())
        if bias is not None:
            head.bias.copy_(bias.float())
    return head.eval()


class ClassifierRunner:
    """Merged encoder + head for one artifact; ``predict`` gives labels, probabilities and explanations."""

    def __init__(self, artifact_dir: str | Path, device: str = "cpu", num_threads: int | None = None):
        from peft import PeftModel

        self.artifact_dir = Path(artifact_dir)
        self.meta: ArtifactMeta = read_meta(self.artifact_dir)
        self.labels: list[str] = list(self.meta.labels)
        self.max_length = int(self.meta.max_length)
        self.normalize_input = self.meta.normalize_input
        self.adapter_hash = self.meta.adapter_hash
        self.device = torch.device(device)
        configure_threads(num_threads)
        bundle = load_encoder(self.meta.encoder, fresh=True)
        self.tokenizer = bundle.tokenizer
        peft_model = PeftModel.from_pretrained(bundle.model, str(self.artifact_dir / ADAPTER_DIR))
        self.encoder = peft_model.merge_and_unload().to(self.device).eval()
        for param in self.encoder.parameters():
            param.requires_grad_(False)
        self.head = _load_head(self.artifact_dir / HEAD_FILE, bundle.hidden_size, len(self.labels)).to(
            self.device
        )
        for param in self.head.parameters():
            param.requires_grad_(False)

    def predict(self, texts: Sequence[str], explain: bool = True) -> list[ItemResult]:
        """Classify ``texts`` in one forward pass (plus one backward pass when ``explain``).

        Text longer than the task's ``max_length`` tokens is cut and flagged ``truncated``; an empty
        string is a valid input (only the special tokens are encoded), whose explanation is empty.
        """
        if isinstance(texts, str):
            raise TypeError("predict() takes a sequence of texts, not a single string")
        if len(texts) == 0:
            return []
        # as in training (the artifact says): explanations then name words of the normalized text
        texts = normalize_all(texts) if self.normalize_input else list(texts)
        enc = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        truncated = [len(e.overflowing) > 0 for e in enc.encodings]
        input_ids = enc["input_ids"].to(self.device)
        mask = enc["attention_mask"].to(self.device)
        extra = {}
        if "token_type_ids" in enc:
            extra["token_type_ids"] = enc["token_type_ids"].to(self.device)

        embeddings = self.encoder.get_input_embeddings()(input_ids).detach()
        if explain:
            embeddings.requires_grad_(True)
        with torch.set_grad_enabled(explain):
            hidden = self.encoder(inputs_embeds=embeddings, attention_mask=mask, **extra).last_hidden_state
            logits = self.head(mean_pool(hidden, mask))
            predicted = logits.argmax(dim=-1)
            scores = None
            if explain:
                scores = attribution_scores(logits, predicted, embeddings, mask)
        probs = torch.softmax(logits.detach().float(), dim=-1).cpu()
        predicted = predicted.cpu()

        results: list[ItemResult] = []
        for i, text in enumerate(texts):
            explanation: list[tuple[str, float]] = []
            if scores is not None:
                explanation = merge_to_words(
                    text, enc.word_ids(i), enc["offset_mapping"][i].tolist(), scores[i].tolist(), TOP_K
                )
            results.append(
                ItemResult(
                    label=self.labels[int(predicted[i])],
                    probabilities=[float(p) for p in probs[i]],
                    explanation=explanation,
                    truncated=truncated[i],
                    adapter_hash=self.adapter_hash,
                )
            )
        return results

"""Regenerate the tiny tokenizers the seeded pipelines ship with (package data, committed).

    python -m attnparity.pipelines.make_tokenizers

Writes ``tokenizers/clip/{vocab.json,merges.txt}`` (byte-level BPE in CLIP's own file format) and
``tokenizers/t5/spiece.model`` (a sentencepiece unigram model, T5's format). Both are learned from
the small fixed corpus below, single-threaded, so the files come out byte-identical every time; the
pipelines' goldens depend on them (token ids feed the text encoders), so regenerate only on purpose.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

HERE = Path(__file__).parent / "tokenizers"

#: Prompt-like English: enough for a few hundred merges / pieces, small enough to read.
CORPUS = """
a painting of a squirrel eating a burger
an astronaut riding a horse on the moon, highly detailed, digital art
a photo of a cat holding a sign that says hello world
a red fox sitting in a snowy forest at dawn, soft light
a watercolor landscape with mountains, a river and small houses
portrait of an old fisherman with a grey beard, oil on canvas
a bowl of fruit on a wooden table, still life, warm colors
a futuristic city skyline at night with neon lights and flying cars
a small robot watering flowers in a garden, cartoon style
a lighthouse on a rocky coast during a storm, dramatic clouds
two dogs playing with a ball in a green park on a sunny day
a cup of coffee next to an open book by the window, morning light
an ancient temple covered in vines in the jungle, cinematic
a blue bird perched on a branch of a cherry tree in spring
a sailing boat on a calm lake at sunset, reflections on the water
close up of a butterfly wing, macro photography, vivid colors
a medieval castle on a hill under a starry sky
a bicycle leaning against a brick wall in an old street
a plate of pasta with tomato sauce and basil, food photography
a snowy mountain peak above the clouds, aerial view
"""


def corpus_lines() -> list[str]:
    return [line.strip() for line in CORPUS.strip().splitlines() if line.strip()]


def _pre_tokenizer():
    """The normalizer + pre-tokenizer of transformers' CLIPTokenizer, so merges fit its input."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                       normalizers.Lowercase()])
    split = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    return normalizer, split


def learn_bpe(lines: list[str], merges_wanted: int) -> list[tuple[str, str]]:
    """Plain BPE on byte-level words ending in '</w>'. Ties go to the lexicographically smallest
    pair, so the result never depends on hash or thread order (tokenizers' trainer does)."""
    from collections import Counter

    normalizer, split = _pre_tokenizer()
    words: Counter[tuple[str, ...]] = Counter()
    for line in lines:
        for piece, _ in split.pre_tokenize_str(normalizer.normalize_str(line)):
            symbols = list(piece)
            symbols[-1] += "</w>"
            words[tuple(symbols)] += 1
    merges: list[tuple[str, str]] = []
    for _ in range(merges_wanted):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < 2:
            break
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return merges


def make_clip(out: Path, merges_wanted: int = 300) -> None:
    """CLIP BPE: vocab = 256 byte symbols, the same with '</w>', the learned merges, the specials
    (CLIP's own order); merges.txt with its '#version' header line."""
    from tokenizers.pre_tokenizers import ByteLevel

    merges = learn_bpe(corpus_lines(), merges_wanted)
    symbols = sorted(ByteLevel.alphabet())
    vocab_list = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(vocab_list))}
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")


def make_t5(out: Path, vocab_size: int = 250) -> None:
    """T5 sentencepiece unigram: pad=0, eos=1, unk=2, no bos (T5's layout)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines() * 4), model_writer=model, model_type="unigram",
        vocab_size=vocab_size, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
        character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "spiece.model").write_bytes(model.getvalue())


def main() -> None:
    make_clip(HERE / "clip")
    make_t5(HERE / "t5")
    print(f"wrote {HERE}/clip/vocab.json, merges.txt and {HERE}/t5/spiece.model")


if __name__ == "__main__":
    main()

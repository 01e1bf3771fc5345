"""Training the WordPiece tokenizer twice on the same text gives the same vocabulary.

The Rust trainer iterates hash maps seeded per process, so a repeat inside one process proves
nothing: each training runs in a fresh interpreter.
"""
import subprocess
import sys

SCRIPT = """
import hashlib, json
from bertbook.data import load_wiki_corpus
from bertbook.tokenizer import train_wordpiece
tok = train_wordpiece(load_wiki_corpus()["train"]["text"][:10], vocab_size=1500)
print(hashlib.sha256(json.dumps(sorted(tok.get_vocab().items())).encode()).hexdigest())
"""


def test_training_is_deterministic_across_processes():
    digests = {subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                              check=True).stdout.strip() for _ in range(2)}
    assert len(digests) == 1, digests

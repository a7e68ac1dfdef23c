"""A local OpenAI-compatible chat-completions server for tests: scripted answers, or an honest keyword "model".

Each queued step is a dict: {"content": str} answers with that text, {"status": 500} fails with that code,
{"body": b"..."} sends raw bytes, and {"delay": s} sleeps first. With nothing queued it ranks the prompt's
passages by how many query words each contains, like a (very small) language model would; asked to write a
question for a passage, it answers "What about <its first five words>?".
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PASSAGE = re.compile(r"^\[(\d+)\] (.*)$", re.M)
QUERY = re.compile(r"^Search query: (.*)$", re.M)


def question_for(prompt: str) -> str:
    """A writer's answer: a question made of the passage's first five words (deterministic, easy to check)."""
    passage = prompt.split("Passage: ", 1)[1].split()
    return f"What about {' '.join(passage[:5])}?"


def keyword_ranking(prompt: str) -> str:
    query = set(QUERY.search(prompt).group(1).lower().split())
    passages = [(int(k), text) for k, text in PASSAGE.findall(prompt)]
    ranked = sorted(passages, key=lambda p: -len(query & set(p[1].lower().split())))  # stable: ties keep order
    return " > ".join(f"[{k}]" for k, _ in ranked)


class ScriptedLLM:
    def __init__(self):
        self.script: list[dict] = []
        self.requests: list[dict] = []  # {"body": parsed JSON, "authorization": header}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                server.requests.append({"path": self.path, "body": body,
                                        "authorization": self.headers.get("authorization")})
                step = server.script.pop(0) if server.script else {}
                time.sleep(step.get("delay", 0))
                if "status" in step:
                    self.send_response(step["status"])
                    self.end_headers()
                    return
                prompt = body["messages"][-1]["content"]
                answer = question_for if "Passage: " in prompt else keyword_ranking
                content = step.get("content", answer(prompt))
                payload = step.get("body") or json.dumps({
                    "choices": [{"message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(content.split())},
                }).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

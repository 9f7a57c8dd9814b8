"""The baseline for bench/intake.py: a bare Flask endpoint that reads the body and answers 200."""

from __future__ import annotations

from flask import Flask, Response, jsonify, request


def create_bare_app() -> Flask:
    app = Flask(__name__)

    @app.post("/webhooks")
    def webhooks() -> Response:
        request.get_data()
        return jsonify(status="ok")

    return app

"""Pronghorn quickstart example.

Run it with:

    pronghorn examples.main:app

then try:

    curl http://127.0.0.1:8000/
    curl http://127.0.0.1:8000/items/42?q=hello
    curl -X POST http://127.0.0.1:8000/items -H 'content-type: application/json' \
         -d '{"name": "hammer", "price": 9.5}'
    curl http://127.0.0.1:8000/stats
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI, Request
from pydantic import BaseModel


@asynccontextmanager
async def lifespan(app: FastAPI):
    # Everything yielded here becomes request.state (scope["state"]) in every request.
    yield {"started_at": time.time(), "greeting": "Hello from Pronghorn"}


app = FastAPI(title="Pronghorn example", lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float
    quantity: int = 1


@app.get("/")
async def hello(request: Request):
    return {"message": request.state.greeting}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: Optional[str] = None):
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(item: Item):
    return {"item": item.model_dump(), "total": item.price * item.quantity}


@app.get("/stats")
async def stats(request: Request):
    return {"uptime_seconds": round(time.time() - request.state.started_at, 3)}

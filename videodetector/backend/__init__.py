"""The recognition backend: a FindFace Server 2.6 compatible REST API (/v0 and /v1).

Run it with ``fkvideo_backend serve [--host H] [--port P] [--data-dir DIR] [-c FILE]``
(tokens: ``fkvideo_backend token [--short]``), embed it with ``app.create_app(settings)``,
or run it in a thread with ``server.BackendServer`` (``.url``, ``.create_token()``).

Modules: ``settings`` (options, facenapi names), ``app`` (ASGI app, errors, middleware),
``faces`` / ``galleries`` / ``persons`` / ``cameras`` (routers), ``service`` (face logic,
persons, friends), ``storage`` (SQLite + image files), ``index`` (in-memory search),
``engine`` (models), ``imaging``, ``params`` (request parameters), ``views`` (JSON shapes),
``metrics``, ``server``, ``cli``.

Where this backend differs from the reference:

- ``POST /face`` always answers ``{"results": [face, ...]}`` (4.4.5, 9.1); the
  identify-shaped answer printed in 8.2.3 / 8.3.3 is not used.
- Error ``code`` is always a string (``BAD_PARAM`` for "Too many faces", which the reference
  shows with ``"code": 400``); missing objects are 404 ``NOT_FOUND``.
- Gender, age and emotions need ``--gae``. Emotions (FER2013 mini-Xception, 7 classes): the
  two most likely names on /detect and /face (stored with the face), all seven with scores in
  the Extraction API. Where asked and not answered, ``unavailable`` says why and everything
  else is answered.
- Photos given as URLs are fetched only with ``--fetch-urls``.
- Faces carry ``cam_id`` and, when posted by the video detector, ``detectorParams``;
  ``gender_confidence`` accompanies ``gender``.
- Timestamps are returned in UTC without an offset; friend days are UTC dates.
"""

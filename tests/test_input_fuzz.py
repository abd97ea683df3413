"""Any JSON value in any input of any model version gets a 201, or a 422 that names that input.

The server reads request bodies with Python's ``json``, which takes ``NaN``, ``Infinity`` and
``-Infinity`` and integers of hundreds of digits; a JSON string may also hold a lone UTF-16
surrogate (``"\\ud800"``) that no UTF-8 response can carry back. The examples pin what each of
those gets; the properties send Hypothesis' values to every field of every version the server
registers (``default_registry``) over real HTTP, and many more cases, several fields at once, to
the validator itself, the test fixture models' included.

The server here has no checkpoints: a created prediction of a model with weights fails when it
loads them, and each one is canceled as soon as it is created, which stops the synth too. The
verdict under test is the create call's, and no model needs to run for it.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import overture_test_models
from harness import TOKEN, UNLIMITED, Server, wait_finished
from overture.errors import InvalidInput
from overture.models.base import Version
from overture.models.registry import default_registry
from overture.models.riffusion import VERSION as RIFFUSION_VERSION
from overture.models.schema import Field
from overture.models.stable_audio import STABILITY_VERSION, STACKADOC_VERSION
from overture.models.synth import SYNTH_VERSION

pytestmark = pytest.mark.timeout(240)

REGISTRY = default_registry()
#: Every version once (``melody`` is an alias of Replicate's MusicGen version).
VERSIONS: list[Version] = list({version.id: version for _, version in REGISTRY.versions.values()}.values())
#: JSON's own spelling of each number that is not finite, as a message quotes it.
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def ref(version: Version) -> str:
    model, _ = REGISTRY.version(version.id)
    return f"{model.ref}@{version.id[:8]}"


def version_of(name: str) -> Version:
    """The version the API resolves ``name`` to: an id, or ``owner/name`` for the latest."""
    return REGISTRY.version(name)[1]


def fields_of_kind(*kinds: type) -> list[Any]:
    """Each input of each version whose kind is one of ``kinds`` (any, when none), as a test parameter."""
    return [
        pytest.param(version, field, id=f"{ref(version)}:{field.name}")
        for version in VERSIONS
        for field in version.inputs.fields
        if not kinds or field.kind in kinds
    ]


def required_inputs(version: Version) -> dict[str, Any]:
    """The least a prediction of ``version`` needs to be created: its required fields, filled in."""
    filled: dict[str, Any] = {}
    for field in version.inputs.fields:
        if field.required:
            assert field.kind is str and field.spec.choices is None, f"no sample value for {field.name}"
            filled[field.name] = "a tune"
    return filled


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("data") / "overture-data", *UNLIMITED).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    # A connection per request: a 500 closes its connection, and the next report should not be
    # about that instead of its own request.
    headers = {"Authorization": f"Bearer {TOKEN}", "Connection": "close"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as client:
        yield client


def create(http: httpx.Client, version: Version, inputs: dict[str, Any]) -> httpx.Response:
    """POST the inputs as Python's ``json`` writes them (NaN and all), canceling what is created."""
    body = json.dumps({"version": version.id, "input": inputs})
    response = http.post("/v1/predictions", content=body, headers={"Content-Type": "application/json"})
    if response.status_code == 201:
        http.post(f"/v1/predictions/{response.json()['id']}/cancel").raise_for_status()
    return response


def named(response: httpx.Response) -> list[str]:
    """The fields a 422 names, in its order, as its ``detail`` spells them."""
    return re.findall(r"^- (.+?): ", response.json()["detail"], re.MULTILINE)


def refusal(response: httpx.Response, name: str) -> str:
    """The message of a 422 that names the input ``name`` and nothing else."""
    assert response.status_code == 422, response.text
    assert named(response) == [f"input.{name}"], response.text
    return response.json()["detail"].removeprefix(f"- input.{name}: ").rstrip("\n")


# -- examples ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "field"), fields_of_kind(int, float))
def test_a_number_that_is_not_finite_is_refused_by_name(http: httpx.Client, version: Version, field: Field) -> None:
    for spelling, value in NON_FINITE.items():
        response = create(http, version, {**required_inputs(version), field.name: value})
        assert refusal(response, field.name) == f"must be a finite number (got {spelling})"


def test_an_integer_beyond_any_float_is_held_to_the_bounds_or_refused_as_too_large(http: httpx.Client) -> None:
    huge = 10**400
    response = create(http, version_of(SYNTH_VERSION), {"duration": huge})
    assert refusal(response, "duration") == "must be less than or equal to 600 (got an integer of 401 digits)"
    response = create(http, version_of("riffusion/riffusion"), {"alpha": -huge})
    assert refusal(response, "alpha") == "must be greater than or equal to 0 (got an integer of 401 digits)"
    # top_p has no bounds: the number itself does not fit.
    response = create(http, version_of("meta/musicgen"), {"top_p": huge})
    beyond = "must be a number between -1.8e+308 and 1.8e+308 (got an integer of 401 digits)"
    assert refusal(response, "top_p") == beyond


def test_a_huge_integer_is_quoted_by_its_number_of_digits(http: httpx.Client) -> None:
    response = create(http, version_of("riffusion/riffusion"), {"num_inference_steps": -(10**30)})
    message = refusal(response, "num_inference_steps")
    assert message == "must be greater than or equal to 1 (got an integer of 31 digits)"


def test_a_boolean_is_not_a_number_and_an_integral_float_is_an_integer(http: httpx.Client) -> None:
    synth = version_of(SYNTH_VERSION)
    assert refusal(create(http, synth, {"duration": True}), "duration") == "must be a number (got boolean)"
    assert refusal(create(http, synth, {"seed": False}), "seed") == "must be an integer (got boolean)"
    assert refusal(create(http, synth, {"seed": 1.5}), "seed") == "must be an integer (got 1.5)"
    created = create(http, synth, {"seed": 7.0, "duration": 1})
    assert created.status_code == 201, created.text


def test_text_with_a_lone_surrogate_is_refused_by_name(http: httpx.Client) -> None:
    """UTF-8 cannot encode ``\\ud800``: accepted, the prediction could never be shown."""
    synth = version_of(SYNTH_VERSION)
    response = create(http, synth, {"prompt": "jazz \ud800 in D minor"})
    assert refusal(response, "prompt") == "must be valid Unicode text (got a lone surrogate \\ud800 at index 5)"
    response = create(http, version_of("meta/musicgen"), {"prompt": "x", "input_audio": "data:audio/wav;base64,\udfff"})
    message = refusal(response, "input_audio")
    assert message == "must be valid Unicode text (got a lone surrogate \\udfff at index 22)"


def test_an_unknown_input_is_ignored_unless_json_could_not_show_it_back(http: httpx.Client) -> None:
    """Unknown inputs are ignored, as in Cog, but stored and shown with the prediction and its
    webhooks: what JSON has no spelling for (NaN, a lone surrogate) is refused by name."""
    synth = version_of(SYNTH_VERSION)
    created = create(http, synth, {"duration": 1, "extra": {"nested": [1, "é", None]}})
    assert created.status_code == 201 and created.json()["input"]["extra"] == {"nested": [1, "é", None]}
    response = create(http, synth, {"duration": 1, "extra": {"nested": [1, math.nan]}})
    assert refusal(response, "extra") == "must hold only finite numbers (got NaN)"
    response = create(http, synth, {"duration": 1, "extra": -math.inf})
    assert refusal(response, "extra") == "must be a finite number (got -Infinity)"
    response = create(http, synth, {"duration": 1, "extra": ["\ud800"]})
    assert refusal(response, "extra") == "must be valid Unicode text (got a lone surrogate \\ud800 at index 0)"
    response = create(http, synth, {"duration": 1, "ex\udc80tra": 1})
    message = refusal(response, "ex\\udc80tra")
    assert message == "its name must be valid Unicode text (got a lone surrogate \\udc80 at index 2)"


def test_a_long_value_is_quoted_briefly(http: httpx.Client) -> None:
    synth = version_of(SYNTH_VERSION)
    response = create(http, synth, {"output_format": "w" * 2**20})
    message = refusal(response, "output_format")
    assert message == f"'{'w' * 40}…' (1048576 characters) is not one of the allowed values: 'wav', 'mp3'"


@pytest.mark.parametrize("version_id", [STABILITY_VERSION, STACKADOC_VERSION])
def test_stable_audio_names_the_sigma_the_client_chose(http: httpx.Client, version_id: str) -> None:
    """``sigma_min`` must be below ``sigma_max``: a wrong pair is reported on the one the client set."""
    version = version_of(version_id)
    order = "must be above sigma_min (got sigma_min 0.03 and sigma_max 0)"
    assert refusal(create(http, version, {"prompt": "a", "sigma_max": 0}), "sigma_max") == order
    response = create(http, version, {"prompt": "a", "sigma_min": 600})
    assert refusal(response, "sigma_min") == "must be below sigma_max (got sigma_min 600.0 and sigma_max 500)"
    response = create(http, version, {"prompt": "a", "sigma_min": 0})
    assert refusal(response, "sigma_min") == "must be above 0 (got 0.0)"
    response = create(http, version, {"prompt": "a", "sigma_min": 2, "sigma_max": 1})
    assert response.status_code == 422 and named(response) == ["input.sigma_min", "input.sigma_max"]


@pytest.mark.parametrize("version_id", [STABILITY_VERSION, STACKADOC_VERSION, RIFFUSION_VERSION])
def test_a_diffusion_model_refuses_a_seed_its_generator_cannot_take(http: httpx.Client, version_id: str) -> None:
    """torch's generator takes seeds below 2**64; any negative seed means a random one."""
    version = version_of(version_id)
    base = required_inputs(version)
    response = create(http, version, {**base, "seed": 2**64})
    message = refusal(response, "seed")
    assert message == "must be less than 2**64, or -1 for a random seed (got 18446744073709551616)"
    assert create(http, version, {**base, "seed": 2**64 - 1}).status_code == 201
    assert create(http, version, {**base, "seed": -(10**30)}).status_code == 201


@pytest.mark.parametrize(
    ("version_id", "field", "limit"),
    [
        (STABILITY_VERSION, "steps", 10_000),
        (STACKADOC_VERSION, "steps", 10_000),
        (RIFFUSION_VERSION, "num_inference_steps", 10_000),
        (STABILITY_VERSION, "batch_size", 16),
    ],
)
def test_a_diffusion_model_refuses_more_work_than_it_could_hold(
    http: httpx.Client, version_id: str, field: str, limit: int
) -> None:
    """A billion steps would allocate gigabytes of timesteps before the first step, and a batch has
    no memory bound of its own: both are refused when the prediction is created."""
    version = version_of(version_id)
    base = required_inputs(version)
    response = create(http, version, {**base, field: 10**9})
    assert refusal(response, field) == f"must be at most {limit} (got 1000000000)"
    assert create(http, version, {**base, field: limit}).status_code == 201


@pytest.mark.parametrize(
    ("inputs", "error"),
    [
        # Planning 10**12 s window by window never ended, holding the worker that every MusicGen
        # prediction shares while its memory grew.
        ({"duration": 10**12}, "`duration` must be at most 86400 seconds (a day of audio; got 1000000000000)."),
        (
            {"seed": 10**400},
            "`seed` must be between 0 and 4294967295, or -1 for a random seed (got an integer of 401 digits).",
        ),
    ],
    ids=["duration", "seed"],
)
def test_musicgen_fails_a_prediction_it_cannot_generate_before_any_work(
    http: httpx.Client, inputs: dict[str, int], error: str
) -> None:
    """Replicate's MusicGen schema sets no maximum, and its errors fail the prediction rather than
    the request; the message says what is wrong in a line."""
    body = {"version": version_of("meta/musicgen").id, "input": {"prompt": "jazz", **inputs}}
    created = http.post("/v1/predictions", json=body)
    assert created.status_code == 201, created.text
    ended = wait_finished(http, created.json()["id"])
    assert ended["status"] == "failed" and ended["error"] == error, ended["error"]


# -- properties ----------------------------------------------------------------------------------

#: Any character, control characters and lone surrogates included.
CHARACTERS = st.characters(exclude_categories=()) | st.characters(categories=["Cs"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),  # NaN and the infinities too
    st.text(CHARACTERS, max_size=24),
)
#: Any JSON value Python's ``json`` can read, nested arrays and objects included.
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(CHARACTERS, max_size=6), inner, max_size=3),
    max_leaves=8,
)
#: Every field gets each of these as an explicit example, before the values Hypothesis draws.
EDGES: list[Any] = [
    *NON_FINITE.values(),
    10**400,
    -(10**400),
    True,
    None,
    {"nested": [math.nan]},
    "\ud800",
    "aé🎵\x00" * (2**20 // 8),  # a megabyte of UTF-8: 1, 2, 4 and 1 bytes
]
#: Values some field takes, in and out of its bounds, so that predictions get created too.
PLAUSIBLE = st.one_of(
    st.sampled_from(sorted({str(c) for v in VERSIONS for f in v.inputs.fields for c in f.spec.choices or ()})),
    st.booleans(),
    st.integers(min_value=-3, max_value=60),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.floats(min_value=-3, max_value=60),
    # File inputs, loopback only: a prediction that starts before its cancel fetches nothing else.
    st.sampled_from(["data:,", "data:audio/wav;base64,UklGRg==", "http://127.0.0.1:9/none.wav"]),
    st.builds("data:".__add__, st.text(CHARACTERS, max_size=12)),
)
ANY_VALUE = JSON_VALUES | PLAUSIBLE


def with_edges(test: Any) -> Any:
    """``test`` with each of ``EDGES`` as an explicit example."""
    for edge in EDGES:
        test = example(value=edge)(test)
    return test


@pytest.fixture(scope="module")
def cases(request: pytest.FixtureRequest) -> Iterator[Counter[str]]:
    """Counts the cases each property runs, and reports them after the module's tests."""
    counts: Counter[str] = Counter()
    yield counts
    line = "input fuzz: " + ", ".join(f"{count} {name}" for name, count in sorted(counts.items()))
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print(f"\n{line}")


#: Reproducible (derandomized, no example database), with no deadline and no complaint about slow
#: or large examples: the machine is busy, and megabyte strings are meant.
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@pytest.mark.parametrize(("version", "field"), fields_of_kind())
@settings(FUZZ, max_examples=10)
@with_edges
@given(value=ANY_VALUE)
def test_any_value_in_any_field_is_created_or_refused_by_name_over_http(
    http: httpx.Client, cases: Counter[str], version: Version, field: Field, value: Any
) -> None:
    response = create(http, version, {**required_inputs(version), field.name: value})
    cases[f"HTTP cases answered {response.status_code}"] += 1
    assert response.status_code in (201, 422), response.text[:2000]
    if response.status_code == 422:
        refusal(response, field.name)


#: The fixture models the test server also serves; only the validator sees them here, since some
#: of them block, sleep or allocate when they run.
ALL_VERSIONS = VERSIONS + [version for model in overture_test_models.MODELS for version in model.versions]


@settings(FUZZ, max_examples=2000)
@given(data=st.data())
def test_the_validator_accepts_or_names_only_inputs_the_client_sent(cases: Counter[str], data: st.DataObject) -> None:
    """Many more cases than over HTTP, several fields at once, with ``validate`` and the model's own
    ``check_inputs`` as the engine calls them at create time."""
    version = data.draw(st.sampled_from(ALL_VERSIONS), label="version")
    names = st.sampled_from([field.name for field in version.inputs.fields]) | st.text(CHARACTERS, max_size=6)
    raw = data.draw(st.dictionaries(names, st.sampled_from(EDGES) | ANY_VALUE, max_size=5), label="input")
    cases["validator cases"] += 1
    try:
        values = version.inputs.validate(raw)
        errors = version.predictor.check_inputs(raw, values)
    except InvalidInput as exc:
        errors = exc.errors
    sent = {name.encode("utf-8", "backslashreplace").decode() for name, value in raw.items() if value is not None}
    required = {field.name for field in version.inputs.fields if field.required}
    for name, message in errors:
        assert name in sent or (name in required and message == "field required"), (name, message)
        # The 422 carries both as UTF-8 JSON.
        json.dumps([name, message], allow_nan=False, ensure_ascii=False).encode()
    if errors:
        return
    # The prediction stores and shows the input as sent: it must be JSON, and UTF-8 must carry it.
    json.dumps(raw, allow_nan=False, ensure_ascii=False).encode()
    # What the client gave reaches the model as the declared kind (defaults are passed as declared).
    for field in version.inputs.fields:
        if raw.get(field.name) is not None:
            value = values[field.name]
            assert type(value) is (str if field.kind is Path else field.kind), (field.name, value)
            assert not isinstance(value, float) or math.isfinite(value)

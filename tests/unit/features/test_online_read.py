"""The bulk SQLite read's two halves against Feast's own code: entity keys and stored values."""

from __future__ import annotations

import math

import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.Value_pb2 import Null, Value
from feast.value_type import ValueType

from features.feature_store import _decode_values, _entity_keys, _proto_value, _serialized_keys


def feast_keys(keys: dict, rows: list[dict]) -> list[bytes]:
    return [
        serialize_entity_key(key, entity_key_serialization_version=3)
        for key in _entity_keys(keys, rows)
    ]


@pytest.mark.parametrize(
    "keys, rows",
    [
        (
            {"store_id": ValueType.INT64, "product_id": ValueType.INT64},
            [
                {"store_id": 1, "product_id": 1000},
                {"store_id": 2**40, "product_id": -5},
                {"store_id": 0, "product_id": 2**63 - 1},
            ],
        ),
        ({"customer_id": ValueType.INT64}, [{"customer_id": 7}, {"customer_id": 7}]),
        ({"identity_key": ValueType.STRING}, [{"identity_key": "web:u-1"}]),  # Feast's path
    ],
)
def test_keys_are_serialized_as_feast_serializes_them(keys, rows):
    assert _serialized_keys(keys, rows, 3) == feast_keys(keys, rows)


def test_values_decode_as_their_protos_do():
    protos = [
        Value(float_val=1.5),
        Value(float_val=0.1),  # stored as float32: 0.10000000149011612 either way
        Value(float_val=0.0),
        Value(float_val=float("nan")),
        Value(double_val=-2.25),
        Value(int64_val=0),
        Value(int64_val=-(2**40)),
        Value(int32_val=3),
        Value(bool_val=True),
        Value(string_val="consent"),
        Value(null_val=Null.NULL),
        Value(),  # an unset value: an empty blob
    ]
    blobs = [proto.SerializeToString() for proto in protos]
    decoded = _decode_values(blobs)
    for blob, value in zip(blobs, decoded, strict=True):
        expected = _proto_value(Value.FromString(blob))
        assert type(value) is type(expected)
        assert value == expected or (math.isnan(value) and math.isnan(expected))
    assert decoded[-2:].tolist() == [None, None]

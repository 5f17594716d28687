from scripts import gen_protos


def test_generated_protobuf_code_is_current() -> None:
    # Execute
    problems = gen_protos.drift()
    # Assert
    assert problems == [], "run python -m scripts.gen_protos: " + "; ".join(problems)


def test_every_proto_is_compiled() -> None:
    names = {p.name for p in gen_protos.find_protos()}
    assert {"export.proto", "hub.proto"} <= names


def test_check_command_returns_zero() -> None:
    assert gen_protos.main(["--check"]) == 0

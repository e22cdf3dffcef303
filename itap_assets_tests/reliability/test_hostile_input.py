"""Hostile input: identifiers, partition keys, YAML and paths crafted to break out of where they belong.

Device ids and partition keys are checked against ID_PATTERN before any SQL is built; table and schema names
against a strict identifier pattern; YAML is loaded safely (no Python objects); relative ingestion globs cannot
leave the project; the UI binds to localhost.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from itap_assets import storage
from itap_assets.core.ingest import IngestError, discover_files, read_file, read_telemetry
from itap_assets.core.alerting import AlertRulesError, load_alert_rules
from itap_assets.partitions import day_device_partitions, day_partitions, device_partitions
from itap_assets.resources import partition_keys_frame
from itap_assets.settings import PROJECT_ROOT, ID_PATTERN, IngestionSettings, SettingsError, load_settings
from itap_assets.storage import StorageError

INJECTION = "x'; DROP TABLE t; --"
HOSTILE_IDS = [
    INJECTION,
    "x\"; DROP TABLE t; --",
    "DEV-0001' OR '1'='1",
    "a;b",
    "a b",
    " DEV-0001",
    "DEV-0001 ",
    "DEV-0001\n",
    "..",
    ".hidden",
    "../etc",
    "a/b",
    "a\\b",
    "-rf",
    "a" * 65,
    "DEV-0001" * 20,
    "d\u00e9v",
    "\u0414\u0415\u0412-1",  # Cyrillic look-alike of DEV-1
    "DEV\u20131",  # en dash
    "DEV\x00",
    "",
    "DEV-0001|x",
]
# "|" separates the dimensions of a day × device key: covered by its own test below.
NO_SEPARATOR = [d for d in HOSTILE_IDS if "|" not in d]
GOOD_IDS = ["DEV-0001", "A1", "pump.07_b-2", "a" * 64, "9"]


def ids(values):
    return [repr(v)[:30] for v in values]


# ------------------------------------------------------------------------------------ device ids, partition keys


@pytest.mark.parametrize("device", HOSTILE_IDS, ids=ids(HOSTILE_IDS))
def test_check_device_id_rejects_hostile_ids(device):
    with pytest.raises(StorageError, match=r"device id .* is not allowed"):
        storage.check_device_id(device)


@pytest.mark.parametrize("device", [None, 7, b"DEV-0001", ["DEV-0001"]], ids=["none", "int", "bytes", "list"])
def test_check_device_id_rejects_non_text(device):
    with pytest.raises(StorageError):
        storage.check_device_id(device)


@pytest.mark.parametrize("device", GOOD_IDS, ids=ids(GOOD_IDS))
def test_check_device_id_accepts_the_documented_alphabet(device):
    assert storage.check_device_id(device) == device
    assert ID_PATTERN.fullmatch(device)


@pytest.mark.parametrize("device", HOSTILE_IDS, ids=ids(HOSTILE_IDS))
def test_partition_frame_rejects_a_hostile_device_among_good_ones(device):
    with pytest.raises(StorageError, match=r"is not allowed"):
        storage.partition_frame([date(2026, 1, 1)] * 2, ["DEV-0001", device])


@pytest.mark.parametrize("device", NO_SEPARATOR, ids=ids(NO_SEPARATOR))
def test_io_manager_partition_keys_reject_a_hostile_device(device):
    """The IO manager maps Dagster keys to a key frame; a hostile device never reaches SQL."""
    with pytest.raises(StorageError):
        partition_keys_frame(day_device_partitions, ["2026-01-01|DEV-0001", f"2026-01-01|{device}"])
    with pytest.raises(StorageError):
        partition_keys_frame(device_partitions, ["DEV-0001", device])


def test_io_manager_partition_key_with_sql_in_the_device_is_refused():
    with pytest.raises(StorageError, match=re.escape(f"device id {INJECTION!r} is not allowed")):
        partition_keys_frame(day_device_partitions, [f"2026-01-01|{INJECTION}"])


def test_io_manager_partition_key_with_an_extra_separator_is_not_retargeted():
    """"2026-01-01|DEV-0001|x" names device "DEV-0001|x", not DEV-0001: it must be refused, never read or
    written as another device's partition."""
    with pytest.raises(StorageError, match=r"DEV-0001\|x"):
        partition_keys_frame(day_device_partitions, ["2026-01-01|DEV-0001|x"])


@pytest.mark.parametrize("day", [INJECTION, "2026-01-01'; --", "", "2026-13-01"])
def test_io_manager_partition_key_with_a_hostile_day_is_refused(day):
    with pytest.raises((StorageError, ValueError)):
        partition_keys_frame(day_device_partitions, [f"{day}|DEV-0001"])
    with pytest.raises((StorageError, ValueError)):
        partition_keys_frame(day_partitions, [day])


def test_io_manager_partition_keys_for_good_keys():
    frame = partition_keys_frame(day_device_partitions, ["2026-01-02|DEV-0002", "2026-01-01|DEV-0001"])
    assert frame.rows() == [(date(2026, 1, 2), "DEV-0002"), (date(2026, 1, 1), "DEV-0001")]
    assert partition_keys_frame(None, ["anything"]) is None


# ------------------------------------------------------------------------------------------------ table names

HOSTILE_IDENTIFIERS = [
    "t; DROP TABLE raw_telemetry",
    't" ; DROP TABLE raw_telemetry; --',
    "raw_telemetry--",
    "main.raw_telemetry",
    "Raw_Telemetry",
    "raw telemetry",
    "1table",
    "",
    "x" * 64,
    "t\u00e4ble",
    "../t",
]


@pytest.mark.parametrize("name", HOSTILE_IDENTIFIERS, ids=ids(HOSTILE_IDENTIFIERS))
def test_check_identifier_refuses_injection(name):
    with pytest.raises(StorageError, match=r"is not a valid table or schema name"):
        storage.check_identifier(name)


def db_with_a_table(path: Path) -> pl.DataFrame:
    frame = pl.DataFrame({"day": [date(2026, 1, 1)], "device_id": ["DEV-0001"], "v": [1.0]})
    storage.replace_partitions(path, "main", "t", frame, storage.partition_frame([date(2026, 1, 1)], ["DEV-0001"]))
    storage.replace_partitions(path, "main", "other", frame, None)
    return frame


def tables(path: Path) -> dict[str, int]:
    with storage.connect(path) as con:
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' ORDER BY 1").fetchall()]
        return {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


@pytest.mark.parametrize("name", HOSTILE_IDENTIFIERS[:3], ids=ids(HOSTILE_IDENTIFIERS[:3]))
def test_storage_refuses_hostile_table_and_schema_names_without_touching_the_database(tmp_path, name):
    db = tmp_path / "t.duckdb"
    frame = db_with_a_table(db)
    with pytest.raises(StorageError):
        storage.replace_partitions(db, "main", name, frame, None)
    with pytest.raises(StorageError):
        storage.replace_partitions(db, name, "t", frame, None)
    with pytest.raises(StorageError):
        storage.read_partitions(db, "main", name, None)
    assert tables(db) == {"other": 1, "t": 1}


def test_storage_hostile_column_name_does_no_damage(tmp_path):
    """A frame column becomes an identifier in `ALTER TABLE … ADD COLUMN`: a crafted name must be refused (or
    stored literally), never run as SQL. Here it would drop another table and commit."""
    db = tmp_path / "t.duckdb"
    frame = db_with_a_table(db)
    evil = frame.with_columns(pl.lit(1).alias('x" INTEGER; DROP TABLE other; COMMIT; --'))
    raised = None
    try:
        storage.replace_partitions(db, "main", "t", evil, storage.partition_frame([date(2026, 1, 1)], ["DEV-0001"]))
    except Exception as exc:  # noqa: BLE001 - judged below, after the damage check
        raised = exc
    assert tables(db) == {"other": 1, "t": 1}, f"the column name ran as SQL ({raised!r})"
    assert raised is None or isinstance(raised, StorageError), repr(raised)


def test_e2e_hostile_device_is_reported_skipped_and_leaves_existing_tables_intact(make_pipeline):
    from itap_assets.assets.ingest import raw_telemetry

    p = make_pipeline()
    p.register("DEV-0001")
    p.materialize([raw_telemetry], first="2026-01-01|DEV-0001")
    with storage.connect(p.db_path) as con:
        con.execute("CREATE TABLE t AS SELECT 42 AS answer")
    before = p.sql("SELECT * FROM raw_telemetry ORDER BY device_id, ts")
    assert before.height == 1440

    p.register(INJECTION)
    assert INJECTION in p.instance.get_dynamic_partitions("device")  # Dagster stores any key: ITAP must refuse it
    result = p.materialize([raw_telemetry], first=f"2026-01-01|{INJECTION}")  # refused as a warning, not fatal
    assert any(f"{INJECTION!r}: not a valid ITAP device id" in (e.user_message or "")
               for e in p.instance.all_logs(result.run_id))

    assert p.sql("SELECT * FROM raw_telemetry ORDER BY device_id, ts").equals(before)
    assert p.sql("SELECT answer FROM t")["answer"].to_list() == [42]
    assert p.sql("SELECT DISTINCT device_id FROM raw_telemetry")["device_id"].to_list() == ["DEV-0001"]


# ----------------------------------------------------------------------------------------- hostile file content


@pytest.mark.parametrize(
    "cell",
    ['"x\'; DROP TABLE t; --"', "..", '"a b"', "a" * 65, "d\u00e9v"],
    ids=["sql", "dotdot", "space", "long", "unicode"],
)
def test_hostile_device_ids_in_a_file_are_refused_at_ingest(tmp_path, cell):
    ingestion = IngestionSettings(
        path=str(tmp_path / "*.csv"), delimiter=";", device_column="dev", columns={"t": "temp_c"},
        families={"temp_c": "Temperature"},
    )
    path = tmp_path / "plant.csv"
    path.write_text(f"ts;dev;t\n2026-01-01T00:00:00;DEV-0001;1\n2026-01-01T00:01:00;{cell};1\n", encoding="utf-8")
    with pytest.raises(IngestError, match=r"^plant\.csv: line 3, column 'dev': device id .* is not allowed"):
        read_file(path, ingestion, tmp_path)


def test_hostile_device_id_from_a_file_name_is_refused(tmp_path):
    ingestion = IngestionSettings(
        path=str(tmp_path / "*.csv"), device_from_path=r"(?P<device>[^/]+)\.csv$", columns={"t": "temp_c"},
        families={"temp_c": "Temperature"},
    )
    name = "x'; DROP TABLE t; --.csv"
    (tmp_path / name).write_text("ts,t\n2026-01-01T00:00:00,1\n", encoding="utf-8")
    with pytest.raises(IngestError, match=r"device id .*DROP TABLE.* taken from the path is not allowed"):
        read_telemetry(ingestion, tmp_path)


# ---------------------------------------------------------------------------------------------------- YAML tags


def python_tags(marker: Path) -> list[str]:
    return [
        f'!!python/object/apply:os.system ["touch {marker}"]\n',
        f'simulation: !!python/object/apply:os.system ["touch {marker}"]\n',
        "simulation: !!python/object:itap_assets.settings.SimulationSettings {devices: 3}\n",
        f'simulation: !!python/object/new:subprocess.Popen [["touch", "{marker}"]]\n',
        "simulation: !!python/name:os.system\n",
        f"rules: !!python/object/apply:subprocess.check_call [[touch, {marker}]]\n",
    ]


def test_settings_refuse_python_yaml_tags_and_execute_nothing(tmp_path):
    marker = tmp_path / "pwned"
    for i, text in enumerate(python_tags(marker)):
        path = tmp_path / f"itap_{i}.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(SettingsError, match=rf"^{re.escape(str(path))}: not valid YAML .*could not determine a "
                                                r"constructor for the tag 'tag:yaml\.org,2002:python/"):
            load_settings(path)
    assert not marker.exists()


def test_alert_rules_refuse_python_yaml_tags_and_execute_nothing(tmp_path):
    marker = tmp_path / "pwned"
    for i, text in enumerate(python_tags(marker)):
        path = tmp_path / f"rules_{i}.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(AlertRulesError, match=rf"^{re.escape(str(path))}: not valid YAML .*tags such as "
                                                  r"!!python/object are refused"):
            load_alert_rules(path, ["Temperature"])
    assert not marker.exists()


def alias_bomb(depth: int) -> str:
    """A YAML flow list whose last element expands to 9**depth strings through aliases (a "billion laughs")."""
    levels = ['&a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, depth)]
    return "[" + ", ".join(levels) + "]"


def test_settings_error_for_a_yaml_alias_bomb_stays_small(tmp_path):
    path = tmp_path / "itap.yaml"
    path.write_text(f"simulation:\n  devices: {alias_bomb(7)}\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"simulation\.devices") as info:
        load_settings(path)
    assert len(str(info.value)) < 10_000


def test_alert_rules_error_for_a_yaml_alias_bomb_stays_small(tmp_path):
    """A ~600-byte rule file whose bad value expands through aliases: the error names file, rule and field, but must
    not render the expanded value (depth 7 = 4.8M strings; at depth 9 it would exhaust memory)."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        "defaults: {default_route: ops}\nrules:\n  - name: storm\n    type: burst\n"
        f"    min_anomalies: {alias_bomb(7)}\n    window_minutes: 5\n    severity: INFO\n    cause: c\n    action: a\n",
        encoding="utf-8",
    )
    assert path.stat().st_size < 1000
    with pytest.raises(AlertRulesError, match=rf"^{re.escape(str(path))}: Rule 'storm': min_anomalies") as info:
        load_alert_rules(path, ["Temperature"])
    assert len(str(info.value)) < 10_000, f"error message is {len(str(info.value)):,} characters"


# --------------------------------------------------------------------------------------------------------- paths


def ingestion_for(path: str | list[str]) -> IngestionSettings:
    return IngestionSettings(
        path=path, device_from_path=r"rig_(?P<device>[A-Za-z0-9]+)\.csv$", delimiter=";", decimal=",",
        timestamp_column="Zeit", timestamp_format="%d.%m.%Y %H:%M:%S", timezone="Europe/Berlin",
        columns={"Temperatur": "temp_c"}, families={"temp_c": "Temperature"},
        settle_seconds=0,  # the files are written just before they are read
    )


@pytest.mark.parametrize(
    "glob",
    [
        "../*.csv",
        "../../etc/*",
        "configs/../../*.csv",
        "configs/examples/rigs/../../../../*.csv",
        "configs\\..\\..\\*.csv",
        "./../**/*.csv",
    ],
)
def test_relative_ingestion_glob_cannot_leave_the_project(glob):
    with pytest.raises(IngestError, match=r"leaves the project root .* via '\.\.'"):
        discover_files(ingestion_for(glob), PROJECT_ROOT)
    with pytest.raises(IngestError, match=re.escape(repr(glob))):
        read_telemetry(ingestion_for(glob), PROJECT_ROOT)


def test_one_escaping_glob_in_a_list_refuses_the_whole_list():
    with pytest.raises(IngestError, match=r"leaves the project root"):
        discover_files(ingestion_for(["configs/examples/rigs/*.csv", "../*.csv"]), PROJECT_ROOT)


def test_an_absolute_path_given_explicitly_is_accepted(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "rig_Z9.csv").write_text("Zeit;Temperatur\n28.03.2026 00:00:00;36,5\n", encoding="utf-8")
    ingestion = ingestion_for(str(outside / "*.csv"))
    assert discover_files(ingestion, PROJECT_ROOT) == [outside / "rig_Z9.csv"]
    frame = read_telemetry(ingestion, PROJECT_ROOT)
    assert frame["device_id"].to_list() == ["Z9"] and frame["temp_c"].to_list() == ["36.5"]


def test_relative_glob_inside_the_project_is_accepted():
    files = discover_files(ingestion_for("configs/examples/rigs/*.csv"), PROJECT_ROOT)
    assert [f.name for f in files] == ["rig_A1.csv", "rig_B2.csv"]
    assert all(f.is_relative_to(PROJECT_ROOT) for f in files)


# ------------------------------------------------------------------------------------------------- webserver


def test_make_ui_binds_the_webserver_to_localhost():
    text = (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^ui:.*\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert recipe is not None, "Makefile has no ui target"
    commands = [line.strip() for line in recipe.group(1).splitlines() if "dagster" in line]
    assert commands and all(re.search(r"\bdagster dev\b", c) for c in commands), commands
    for command in commands:
        assert re.search(r"(^|\s)(-h|--host)\s+127\.0\.0\.1(\s|$)", command), command
        assert "0.0.0.0" not in command and "::" not in command, command

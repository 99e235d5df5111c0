"""Policies shaped like the ones MOM and VDSM ship (mom.md section 2), written for these tests:
defines and run-time parameters, ballooning, KSM, CPU tuning, I/O tuning, per-guest rules."""

from __future__ import annotations

import pytest
from twisted.logger import globalLogPublisher

from mom.entity import Entity
from mom.evaluator import evaluate
from mom.policy import PolicyStore

DEFINES = """
# Names the later parts rely on; parameters may only set names defined here.
(defvar False 0)
(defvar True 1)
(defvar balloonEnabled 0)
(defvar ksmEnabled 1)
(defvar ksmMergeAcrossNodes 1)
(defvar cpuTuneEnabled 1)
(defvar ioTuneEnabled 1)
"""

BALLOON = """
(defvar pressure_limit 0.20)
(defvar step_fraction 0.05)
(defvar min_change 0.0025)

# Only act when the change is worth a balloon operation.
(def worth_it (vm target)
    (if (> (abs (- target vm.balloon_cur)) (* min_change vm.balloon_cur)) 1 0))

(def deflate (vm)
{
    (defvar used (- (vm.StatAvg "balloon_cur") (vm.StatAvg "mem_unused")))
    (defvar lowest (max vm.balloon_min (+ used (* 0.2 vm.balloon_cur))))
    (defvar size (* vm.balloon_cur (- 1 step_fraction)))
    (if (< size lowest) (set size lowest) 0)
    (if (and (<= size vm.balloon_cur) (worth_it vm size))
        (vm.Control "balloon_target" size)
        0)
})

(def inflate (vm)
    (if (< vm.balloon_cur vm.balloon_max) {
        (defvar size (min vm.balloon_max (* vm.balloon_cur (+ 1 step_fraction))))
        (if (worth_it vm size) (vm.Control "balloon_target" size) 0)
    } 0))

(defvar host_free (/ (Host.StatAvg "mem_free") Host.mem_available))

(with Guests guest
    (if (valid guest.balloon_cur (guest.Stat "mem_unused"))
        (if (and (< host_free pressure_limit) balloonEnabled) (deflate guest) (inflate guest))
        (debug "no memory figures for" (guest.Prop "name"))))

# Guaranteed minimum. The parameter name is a typo on purpose: the body reads the caller's
# "guest", bound by the enclosing with (dynamic scope), as the shipped rule does.
(def keep_minimum (quest)
    (if (< guest.balloon_cur guest.balloon_min)
        (guest.Control "balloon_target" guest.balloon_min)
        0))
(with Guests guest (keep_minimum guest))
"""

KSM = """
(defvar pages_min 64)
(defvar pages_max 1250)
(def clamp (v lo hi) (min hi (max lo v)))
(defvar threshold (* Host.mem_available 0.20))
(defvar short (< (Host.StatAvg "mem_free") threshold))
(defvar needed (or short (>= (+ Host.ksm_shareable threshold) Host.mem_available)))
(if (== Host.ksm_pages_shared 0)
    (Host.Control "ksm_merge_across_nodes" ksmMergeAcrossNodes)
    0)
(if (and needed ksmEnabled) {
    (Host.Control "ksm_run" 1)
    (Host.Control "ksm_sleep_millisecs" (max 10 (/ (* 10 16777216) Host.mem_available)))
    (Host.Control "ksm_pages_to_scan"
        (clamp (+ Host.ksm_pages_to_scan (if short 300 -50)) pages_min pages_max))
} (Host.Control "ksm_run" 0))
"""

CPUTUNE = """
(defvar period 100000)
(def limit_cpu (g)
{
    (defvar quota (/ (* (/ g.vcpu_user_limit 100.0) (* period Host.cpu_count)) g.vcpu_count))
    (defvar factor 1)
    (if (> quota 1000) 0 (setq factor (+ 1 (/ 1000 quota))))
    (setq quota (* factor quota))
    (if (!= g.vcpu_quota quota) (g.Control "vcpu_quota" quota) 0)
    (if (!= g.vcpu_period (* factor period)) (g.Control "vcpu_period" (* factor period)) 0)
})
(def unlimit (g) { (g.Control "vcpu_quota" -1) (g.Control "vcpu_period" period) })
(if (== True cpuTuneEnabled) {
    (with Guests g (if (< g.vcpu_user_limit 100) (limit_cpu g) (unlimit g)))
}{
    (with Guests g (unlimit g))
})
"""

IOTUNE = """
(defvar no_limit 0)
(def cap_disks (vm) (with vm.io_tune disk {
    (defvar top disk.maximum)
    (disk.setTotalBytesSec top.total_bytes_sec)
    (disk.setReadIopsSec top.read_iops_sec)
}))
(def free_disks (vm) (with vm.io_tune disk {
    (disk.setTotalBytesSec no_limit)
    (disk.setReadIopsSec no_limit)
}))
(if (== True ioTuneEnabled) {
    (with Guests vm (if (valid vm.io_tune) (cap_disks vm) 0))
}{
    (with Guests vm (if (valid vm.io_tune) (free_disks vm) 0))
})
"""


class Limits:
    """A set of I/O limits read as attributes, like MOM's IoTuneVals."""

    def __init__(self, values: dict[str, int]) -> None:
        self.values = dict(values)

    def __getattr__(self, name: str) -> int:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


class DiskTune:
    """One disk's I/O tuning: maximum limits and the current ones, with setters."""

    def __init__(self, name: str, maximum: dict[str, int], current: dict[str, int]) -> None:
        self.name = name
        self.maximum = Limits(maximum)
        self.current = Limits(current)

    def setTotalBytesSec(self, value: object) -> None:
        """Set the current total bytes per second."""
        self.current.values["total_bytes_sec"] = int(value)  # type: ignore[call-overload]

    def setReadIopsSec(self, value: object) -> None:
        """Set the current read operations per second."""
        self.current.values["read_iops_sec"] = int(value)  # type: ignore[call-overload]


def store_with(**parts: str) -> PolicyStore:
    """:returns: a store holding the named parts (all of which must load)."""
    store = PolicyStore()
    for name, text in parts.items():
        assert store.set_policy(name.replace("_", "-"), text), name
    return store


def vm(name: str, rows: list[dict], fields: tuple[str, ...] = ()) -> Entity:
    """:returns: a guest Entity named ``name``."""
    declared = set(fields) | {key for row in rows for key in row}
    return Entity({"uuid": f"uuid-{name}", "name": name}, rows, declared)


def balloon_guests() -> list[Entity]:
    """:returns: a guest to shrink, one held up by its minimum, and one missing figures."""
    return [
        vm(
            "vm1",
            [
                {"balloon_cur": 1000000, "balloon_min": 0, "balloon_max": 2000000,
                 "mem_unused": 600000},
                {"balloon_cur": 1000000, "balloon_min": 0, "balloon_max": 2000000,
                 "mem_unused": 400000},
            ],
        ),
        vm("vm2", [{"balloon_cur": 800000, "balloon_min": 900000, "balloon_max": 1000000,
                    "mem_unused": 100000}]),
        vm("vm3", [{"balloon_cur": 500, "balloon_min": 0, "balloon_max": 1000}],
           fields=("mem_unused",)),
    ]  # fmt: skip


HOST_SHORT = [
    {"mem_free": 1000, "mem_available": 20000},
    {"mem_free": 3000, "mem_available": 20000},
]


def test_balloon_shrinks_under_pressure_when_enabled_by_a_parameter():
    """With ballooning enabled through a parameters part, a short host deflates its guests."""
    store = store_with(
        p00_defines=DEFINES, p01_parameters="(set balloonEnabled True)", p02_balloon=BALLOON
    )
    guests = balloon_guests()
    assert store.evaluate(Entity({}, HOST_SHORT), guests)
    assert [g.controls for g in guests] == [
        {"balloon_target": 950000.0},  # 5% down: above its used memory plus 20% free
        {"balloon_target": 900000},  # deflating would go above the current size; the minimum rule
        {},  # no mem_unused: skipped with a debug message
    ]


def test_balloon_grows_when_disabled():
    """With the default ``balloonEnabled 0``, guests below their maximum grow by 5%."""
    store = store_with(p00_defines=DEFINES, p02_balloon=BALLOON)
    guests = balloon_guests()
    assert store.evaluate(Entity({}, HOST_SHORT), guests)
    assert guests[0].controls == {"balloon_target": 1050000.0}
    assert guests[1].controls == {"balloon_target": 900000}


def test_balloon_debug_message_for_guest_without_figures():
    """A guest without memory figures gets a ``debug`` message naming it."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        store_with(p00_defines=DEFINES, p02_balloon=BALLOON).evaluate(
            Entity({}, HOST_SHORT), balloon_guests()
        )
    finally:
        globalLogPublisher.removeObserver(events.append)
    debug = [e["values"] for e in events if e.get("log_format", "").startswith("debug:")]
    assert debug == [("no memory figures for", "vm3")]


def test_comment_only_parameters_part_between_others():
    """A comment-only parameters part, stored after the defines, changes nothing."""
    store = store_with(
        p00_defines=DEFINES, p01_parameters="# set at run time\n", p02_balloon=BALLOON
    )
    guests = balloon_guests()
    assert store.evaluate(Entity({}, HOST_SHORT), guests)
    assert guests[0].controls == {"balloon_target": 1050000.0}


def test_parameters_written_with_python_repr():
    """Parameters arrive as ``(set k v)`` lines with Python reprs: ints, True, quoted strings."""
    text = DEFINES + "(defvar mode 'none')\n(defvar level 0)"
    store = store_with(p00_defines=text, p01_parameters="(set level 5)\n(set mode 'test')")
    host = Entity()
    store.set_policy("p02-show", '(Host.Control "mode" mode) (Host.Control "level" level)')
    assert store.evaluate(host, [])
    assert host.controls == {"mode": "test", "level": 5}


def test_parameter_for_an_undefined_name_fails_every_cycle():
    """Setting a parameter the defines do not know makes each evaluation fail."""
    store = store_with(p00_defines=DEFINES, p01_parameters="(set unknownFlag 1)")
    assert not store.evaluate(Entity(), [])


@pytest.mark.parametrize(
    "host, expected",
    [
        (
            {"mem_available": 16777216, "mem_free": 2000000, "ksm_shareable": 0,
             "ksm_pages_shared": 0, "ksm_pages_to_scan": 1100},
            {"ksm_merge_across_nodes": 1, "ksm_run": 1, "ksm_sleep_millisecs": 10,
             "ksm_pages_to_scan": 1250},
        ),
        (
            {"mem_available": 16777216, "mem_free": 2000000, "ksm_shareable": 0,
             "ksm_pages_shared": 0, "ksm_pages_to_scan": 30},
            {"ksm_merge_across_nodes": 1, "ksm_run": 1, "ksm_sleep_millisecs": 10,
             "ksm_pages_to_scan": 330},
        ),
        (
            {"mem_available": 8388608, "mem_free": 8000000, "ksm_shareable": 8000000,
             "ksm_pages_shared": 5, "ksm_pages_to_scan": 100},
            {"ksm_run": 1, "ksm_sleep_millisecs": 20.0, "ksm_pages_to_scan": 64},
        ),
        (
            {"mem_available": 16777216, "mem_free": 9000000, "ksm_shareable": 0,
             "ksm_pages_shared": 5, "ksm_pages_to_scan": 100},
            {"ksm_run": 0},
        ),
    ],
)  # fmt: skip
def test_ksm(host, expected):
    """KSM runs when memory is short or shareable, scanning harder under pressure, clamped."""
    entity = Entity({}, [host])
    assert store_with(p00_defines=DEFINES, p03_ksm=KSM).evaluate(entity, [])
    assert entity.controls == expected


def test_cputune():
    """Limited guests get a quota scaled from their share; small quotas scale the period too."""
    guests = [
        vm("half", [{"vcpu_user_limit": 50, "vcpu_count": 2, "vcpu_quota": -1,
                     "vcpu_period": 100000}]),
        vm("tiny", [{"vcpu_user_limit": 1, "vcpu_count": 8, "vcpu_quota": -1,
                     "vcpu_period": 100000}]),
        vm("free", [{"vcpu_user_limit": 100, "vcpu_count": 1, "vcpu_quota": 5000,
                     "vcpu_period": 100000}]),
    ]  # fmt: skip
    host = Entity({}, [{"cpu_count": 4}])
    assert store_with(p00_defines=DEFINES, p04_cputune=CPUTUNE).evaluate(host, guests)
    assert [g.controls for g in guests] == [
        {"vcpu_quota": 100000.0},
        {"vcpu_quota": 1500.0, "vcpu_period": 300000.0},
        {"vcpu_quota": -1, "vcpu_period": 100000},
    ]


def test_cputune_disabled_resets_everyone():
    """With CPU tuning switched off, every guest is reset to unlimited."""
    guests = [vm("half", [{"vcpu_user_limit": 50, "vcpu_count": 2}])]
    store = store_with(
        p00_defines=DEFINES, p01_parameters="(set cpuTuneEnabled False)", p04_cputune=CPUTUNE
    )
    assert store.evaluate(Entity({}, [{"cpu_count": 4}]), guests)
    assert guests[0].controls == {"vcpu_quota": -1, "vcpu_period": 100000}


def iotune_guests() -> tuple[list[Entity], list[DiskTune]]:
    """:returns: a guest with two tunable disks and a guest without I/O tuning."""
    disks = [
        DiskTune("vda", {"total_bytes_sec": 1000, "read_iops_sec": 50}, {"total_bytes_sec": 0}),
        DiskTune("vdb", {"total_bytes_sec": 2000, "read_iops_sec": 70}, {}),
    ]
    return [vm("io", [{"io_tune": disks}]), vm("plain", [{}], fields=("io_tune",))], disks


def test_iotune_sets_limits_through_methods_of_plain_objects():
    """The policy reads limits through a variable and calls the disks' setters in place."""
    guests, disks = iotune_guests()
    assert store_with(p00_defines=DEFINES, p05_iotune=IOTUNE).evaluate(Entity(), guests)
    assert [d.current.values for d in disks] == [
        {"total_bytes_sec": 1000, "read_iops_sec": 50},
        {"total_bytes_sec": 2000, "read_iops_sec": 70},
    ]
    assert [g.controls for g in guests] == [{}, {}]


def test_iotune_disabled_removes_limits():
    """With I/O tuning off, every limit is set to 0 (unlimited)."""
    guests, disks = iotune_guests()
    store = store_with(
        p00_defines=DEFINES, p01_parameters="(set ioTuneEnabled 0)", p05_iotune=IOTUNE
    )
    assert store.evaluate(Entity(), guests)
    assert [d.current.values for d in disks] == [
        {"total_bytes_sec": 0, "read_iops_sec": 0},
        {"total_bytes_sec": 0, "read_iops_sec": 0},
    ]


def test_three_part_dotted_name_reads_only_two_parts():
    """``disk.maximum.total_bytes_sec`` is ``disk.maximum``: hence the policy's variable."""
    guests, disks = iotune_guests()
    text = "(with vm.io_tune d d.maximum.total_bytes_sec)"
    assert evaluate(text, {"vm": guests[0]}) == [[disks[0].maximum, disks[1].maximum]]
    setter = "(with Guests vm (with vm.io_tune d (d.setTotalBytesSec d.maximum.total_bytes_sec)))"
    store = store_with(p05_bad=setter)
    assert not store.evaluate(Entity(), guests[:1])  # int() of a Limits object fails


def test_all_parts_together():
    """Defines, parameters, balloon, KSM, CPU and I/O tuning run together in name order."""
    store = store_with(
        p00_defines=DEFINES,
        p01_parameters="# none yet\n",
        p02_balloon=BALLOON,
        p03_ksm=KSM,
        p04_cputune=CPUTUNE,
        p05_iotune=IOTUNE,
    )
    rows = [dict(row, ksm_shareable=0, ksm_pages_shared=0, ksm_pages_to_scan=100, cpu_count=2)
            for row in HOST_SHORT]  # fmt: skip
    host = Entity({}, rows)
    guest = vm("all", [{"balloon_cur": 100, "balloon_min": 0, "balloon_max": 200,
                        "mem_unused": 50, "vcpu_user_limit": 100, "vcpu_count": 1,
                        "io_tune": None}])  # fmt: skip
    assert store.evaluate(host, [guest])
    assert host.controls["ksm_run"] == 1
    assert guest.controls == {"balloon_target": 105.0, "vcpu_quota": -1, "vcpu_period": 100000}


def test_guest_specific_rule_skips_named_guests():
    """A rule can read a guest's name with ``Prop`` and leave some guests alone."""
    text = """
    (def skipped (g) (or (== (g.Prop "name") "kubernetes") (== (g.Prop "name") "nomad")))
    (with Guests g (if (skipped g) 0 (g.Control "balloon_target" 1)))
    """
    guests = [vm(name, [{}]) for name in ("kubernetes", "web", "nomad")]
    assert store_with(p02_rule=text).evaluate(Entity(), guests)
    assert [g.controls for g in guests] == [{}, {"balloon_target": 1}, {}]


def test_redefining_a_function_after_the_main_script_has_no_effect():
    """A function redefined after the forms that call it does not change what they did."""
    main = '(def act (g) (g.Control "v" 1))\n(with Guests g (act g))'
    later = '(def act (g) (g.Control "v" 2))'
    guests = [vm("a", [{}])]
    assert store_with(p02_main=main, p03_fragment=later).evaluate(Entity(), guests)
    assert guests[0].controls == {"v": 1}

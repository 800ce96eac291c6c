"""
The two big read answers, read straight from their XML: only the fields the controller uses.

A DescribeInstances answer spends some 150 XML elements on each instance, and botocore turns
every one into dicts (each timestamp through dateutil): about 0.4 s of CPU and 9 MB of dicts
per 1,000 instances, of which the controller reads six fields. DescribeAutoScalingGroups is
smaller per instance but lists every member of a group in one page. At 5,000 instances that
parsing was most of a no-change cycle's CPU, paid at every resync.

``reduce_answers`` hooks a reader into botocore's ``before-parse`` event of one operation. For
an answer with a 2xx status, the reader parses the page with ElementTree's pull parser (expat,
in C), picks the fields into dicts shaped as botocore would have made them (the same keys, fewer
of them) and clears each record (a reservation, a group member) once read, so no page ever
exists as a whole tree; botocore is then handed the page with its data removed, so its own
parser only sees the root, the request id and (Query protocol) the empty result wrapper. Error
answers, and anything that is not well-formed XML, go to botocore's parser untouched: errors,
their codes and ``ResponseParserError`` stay what botocore makes of them.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, Literal, cast
from xml.etree import ElementTree


if TYPE_CHECKING:
    from botocore.client import BaseClient

#: Reads one page's body: its root element (which may have lost the parts already read) and
#: what the controller uses of it. Raises ``ElementTree.ParseError`` for a body that is not XML.
Reader = Callable[[bytes], tuple[ElementTree.Element, dict[str, Any]]]
#: Bytes of a DescribeInstances body fed to the parser at a time.
CHUNK_BYTES = 1 << 16

#: The children of an answer's root that botocore reads as response metadata (EC2 and Query).
_METADATA = frozenset({"requestId", "ResponseMetadata"})


def reduce_answers(client: BaseClient, operation: str, reader: Reader) -> None:
    """Have *client* read the successful answers of *operation* with *reader* only."""
    service_id = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(
        f"before-parse.{service_id}.{operation}",
        functools.partial(_reduce, reader),
        # Once per client, however many adapters share it: a second reader would see the
        # emptied page and replace the first one's answer with an empty one.
        unique_id=f"reconciler.answers.{service_id}.{operation}",
    )


def _reduce(
    reader: Reader,
    *,
    response_dict: MutableMapping[str, Any],
    customized_response_dict: MutableMapping[str, Any],
    **_: object,
) -> None:
    # botocore takes a handler's non-None return value as the answer to the event: None.
    if response_dict["status_code"] >= 300:
        return
    try:
        with _collector_paused():
            # The parser botocore itself uses on this body: expat >= 2.4, whose limits on
            # entity expansion are the billion-laughs guard.
            root, answer = reader(response_dict["body"])
    # A body that is not XML, or a number that is none: botocore's parser (handed the body
    # untouched) raises what it always raises for such an answer.
    except (ElementTree.ParseError, ValueError):
        return
    customized_response_dict.update(answer)
    namespace = _namespace(root.tag)
    for child in list(root):
        name = child.tag.removeprefix(namespace)
        if name.endswith("Result"):
            # The Query protocol's wrapper, which botocore's parser requires.
            child.clear()
        elif name not in _METADATA:
            root.remove(child)
    response_dict["body"] = ElementTree.tostring(root)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """
    The cyclic garbage collector off for the block. A page of 1,000 instances is some 150,000
    elements, each tracked by the collector: enough allocations for many collections, whose
    older generations walk the whole heap (botocore's models included), which made the parse
    2.5 times slower. A tree holds no reference cycles, so the pause loses nothing.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _namespace(tag: str) -> str:
    """The ``{uri}`` prefix of an element's *tag*, or ``""``."""
    return tag[: tag.index("}") + 1] if tag.startswith("{") else ""


def _events(
    body: bytes, events: tuple[Literal["start", "end"], ...]
) -> Iterator[tuple[str, ElementTree.Element]]:
    """The parser's *events* on *body*, fed a chunk at a time so a page never exists as text
    and tree at once. Raises ``ElementTree.ParseError`` for a body that is not XML."""
    parser: ElementTree.XMLPullParser[ElementTree.Element] = ElementTree.XMLPullParser(
        events=events
    )
    view = memoryview(body)
    for start in range(0, len(body), CHUNK_BYTES):
        parser.feed(view[start : start + CHUNK_BYTES])
        # Asked for "start"/"end" events only, each of which carries an element.
        yield from cast("Iterator[tuple[str, ElementTree.Element]]", parser.read_events())
    parser.close()


def instances_answer(body: bytes) -> tuple[ElementTree.Element, dict[str, Any]]:
    """
    A DescribeInstances page: ``Reservations[].Instances[]`` with ``InstanceId``,
    ``State.Name``, ``PrivateIpAddress``, ``InstanceLifecycle``, ``InstanceType`` and
    ``Placement.AvailabilityZone`` (each only when present), and ``NextToken``.

    The page is parsed as it is fed, and each reservation's ``instancesSet`` is read and
    cleared as soon as it ends: the whole tree of a page (16 MB for 1,000 instances from moto,
    more from AWS) never exists, for about 10 % more CPU.
    """
    reservations: list[dict[str, Any]] = []
    ns = instances = ""
    element: ElementTree.Element | None = None
    for _, element in _events(body, ("end",)):
        if not instances:
            ns = _namespace(element.tag)
            instances = f"{ns}instancesSet"
        if element.tag == instances:
            reservations.append({"Instances": [_instance(i, ns) for i in element]})
            element.clear()
    if element is None:
        raise ElementTree.ParseError("no element")
    # The last element to end is the root.
    answer = {"Reservations": reservations}
    return element, _with_token(answer, element.findtext(f"{ns}nextToken"))


def _instance(item: ElementTree.Element, ns: str) -> dict[str, Any]:
    instance = _texts(
        item,
        ns,
        InstanceId="instanceId",
        PrivateIpAddress="privateIpAddress",
        InstanceLifecycle="instanceLifecycle",
        InstanceType="instanceType",
    )
    state = item.find(f"{ns}instanceState")
    if state is not None:
        instance["State"] = _texts(state, ns, Name="name")
    placement = item.find(f"{ns}placement")
    if placement is not None:
        instance["Placement"] = _texts(placement, ns, AvailabilityZone="availabilityZone")
    return instance


def groups_answer(body: bytes) -> tuple[ElementTree.Element, dict[str, Any]]:
    """
    A DescribeAutoScalingGroups page: ``AutoScalingGroups[]`` with ``AutoScalingGroupName``,
    ``DesiredCapacity``, ``Instances[]`` (``InstanceId``, ``LifecycleState``, ``HealthStatus``)
    and ``MixedInstancesPolicy.LaunchTemplate.Overrides[]`` (``InstanceType``,
    ``WeightedCapacity``, as text like botocore's), each only when present, and ``NextToken``.

    Parsed as it is fed, like ``instances_answer``, but one group lists all of its instances:
    each member is read and cleared as it ends (found by its place in the document, so the
    answer's other ``member`` lists are left alone). A group of 5,000 instances would be a
    tree of 12 MB; this way it is 3.
    """
    #: The tags of the elements open around the current one, the root first.
    path: list[str] = []
    groups: list[dict[str, Any]] = []
    members: list[dict[str, Any]] = []
    root: ElementTree.Element | None = None
    ns = ""
    for event, element in _events(body, ("start", "end")):
        if event == "start":
            if root is None:
                root, ns = element, _namespace(element.tag)
            path.append(element.tag.removeprefix(ns))
            continue
        path.pop()
        # Response / Result / AutoScalingGroups / member / Instances / member
        if len(path) == 5 and path[4] == "Instances" and path[2] == "AutoScalingGroups":
            members.append(_member(element, ns))
            element.clear()
        elif len(path) == 3 and path[2] == "AutoScalingGroups":
            groups.append(_group(element, ns, members))
            members = []
            element.clear()
    if root is None:
        raise ElementTree.ParseError("no element")
    answer = {"AutoScalingGroups": groups}
    return root, _with_token(
        answer, root.findtext(f"{ns}DescribeAutoScalingGroupsResult/{ns}NextToken")
    )


def _group(member: ElementTree.Element, ns: str, instances: list[dict[str, Any]]) -> dict[str, Any]:
    """One group of the answer, its *instances* read already."""
    group = _texts(member, ns, AutoScalingGroupName="AutoScalingGroupName")
    desired = member.findtext(f"{ns}DesiredCapacity")
    if desired is not None:
        group["DesiredCapacity"] = int(desired)
    if member.find(f"{ns}Instances") is not None:
        group["Instances"] = instances
    overrides = member.find(f"{ns}MixedInstancesPolicy/{ns}LaunchTemplate/{ns}Overrides")
    if overrides is not None:
        read = [
            _texts(o, ns, InstanceType="InstanceType", WeightedCapacity="WeightedCapacity")
            for o in overrides
        ]
        group["MixedInstancesPolicy"] = {"LaunchTemplate": {"Overrides": read}}
    return group


def _member(instance: ElementTree.Element, ns: str) -> dict[str, Any]:
    return _texts(
        instance,
        ns,
        InstanceId="InstanceId",
        LifecycleState="LifecycleState",
        HealthStatus="HealthStatus",
    )


def _texts(element: ElementTree.Element, ns: str, **fields: str) -> dict[str, Any]:
    """Key → text of the child named by each of *fields*, for the children present."""
    found = {key: element.findtext(ns + tag) for key, tag in fields.items()}
    return {key: text for key, text in found.items() if text is not None}


def _with_token(answer: dict[str, Any], token: str | None) -> dict[str, Any]:
    # botocore leaves NextToken out of the last page (and of an empty element's '').
    return {**answer, "NextToken": token} if token else answer

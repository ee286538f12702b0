#!/usr/bin/env python3
"""A stateful Kubernetes API for the operator's whole-binary tests and benchmark.

kmock's KubernetesEmulator stores objects and streams watch events, but it does not
stamp resourceVersion, uid or creationTimestamp, its lists have no `kind`, it merges
every write the same way, and it has no field ownership. kube-rs's watcher and
kube-lease-manager need all of those, so this subclass adds them:

- every write stamps metadata.resourceVersion from one counter; a write that changes
  nothing changes no version and sends no watch event, as in a real API server
  (otherwise an operator that applies unchanged children would wake itself forever);
- create, server-side apply (with field managers, conflicts and `force`), merge and
  strategic-merge patches (as merge patches), JSON patches (with `test`), and PUT with
  optimistic concurrency on resourceVersion;
- the status subresource: writes to it touch only .status, other writes never do;
- generation bumps on spec changes; finalizers hold deletion behind a
  deletionTimestamp;
- NodePort and LoadBalancer Services get a nodePort per port, allocated once and kept
  by later writes that do not name one (the operator reads the SFU's back);
- lists carry kind and resourceVersion and honour equality label selectors; watches
  from a resourceVersion replay only the events after it (410 Expired when too old), and
  without one start with the current objects; either is taken atomically with the bus
  mark, so no event is missed or seen twice.

Lists are treated as atomic values by apply, which is enough for the objects the
operator writes. Usage: k8s_emulator.py [--port N]; it prints "listening on PORT".
"""

import argparse
import asyncio
import collections
import copy
import datetime
import json
import sys
import uuid
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import enums, rendering

KINDS = {
    ('castyard.dev', 'v1alpha1', 'broadcasts'): 'Broadcast',
    ('', 'v1', 'pods'): 'Pod',
    ('', 'v1', 'services'): 'Service',
    ('', 'v1', 'configmaps'): 'ConfigMap',
    ('', 'v1', 'secrets'): 'Secret',
    ('', 'v1', 'events'): 'Event',
    ('events.k8s.io', 'v1', 'events'): 'Event',
    ('coordination.k8s.io', 'v1', 'leases'): 'Lease',
}
# Fields an apply never owns: they name the object rather than describe it.
IDENTITY = {('apiVersion',), ('kind',), ('metadata', 'name'), ('metadata', 'namespace')}


def leaves(doc: Any, prefix: tuple = ()) -> dict[tuple, Any]:
    """Flattens a document to {path: value}; lists and scalars are leaves."""
    if isinstance(doc, dict) and doc:
        out: dict[tuple, Any] = {}
        for k, v in doc.items():
            out.update(leaves(v, prefix + (k,)))
        return out
    return {prefix: doc}


def merge(base: Any, patch: Any) -> Any:
    """RFC 7386 merge patch: dicts merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(base) if isinstance(base, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
    return out


def remove_path(doc: dict, path: tuple) -> None:
    node = doc
    for k in path[:-1]:
        node = node.get(k)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


def null_tests_pass(doc: dict, ops: list) -> list:
    """The API server's JSON patch finds a missing member equal to null; python's does not."""
    def missing(path: str) -> bool:
        try:
            jsonpatch.JsonPointer(path).resolve(doc)
            return False
        except jsonpatch.JsonPointerException:
            return True
    return [op for op in ops if not (op.get('op') == 'test' and op.get('value') is None and missing(op['path']))]


def error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


def matches(selector: str | None, obj: dict) -> bool:
    if not selector:
        return True
    labels = obj.get('metadata', {}).get('labels') or {}
    for term in selector.split(','):
        key, _, value = term.partition('=')
        if labels.get(key.strip()) != value.lstrip('=').strip():
            return False
    return True


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    _version: int = attrs.field(default=0, init=False)
    # (resource, namespace, name) -> {leaf path: field manager}
    _owners: dict = attrs.field(factory=dict, init=False)
    # 'verb plural[/subresource]' -> count, served at /_emulator/calls for the benchmark.
    _calls: collections.Counter = attrs.field(factory=collections.Counter, init=False)
    # (resourceVersion, resource, event): the recent history a watch from a version replays.
    _log: collections.deque = attrs.field(factory=lambda: collections.deque(maxlen=200_000), init=False)
    _next_node_port: int = attrs.field(default=30000, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for (group, version, plural), kind in KINDS.items():
            gv = f'{group}/{version}' if group else version
            self.resources[f'{gv}/{plural}'] = kmock.ResourceInfo(
                kind=kind, namespaced=True, subresources={'status'},
                verbs={'get', 'list', 'watch', 'create', 'update', 'patch', 'delete'})

    def _allocate_node_ports(self, obj: dict, current: dict | None) -> None:
        spec = obj.get('spec') or {}
        if obj.get('kind') != 'Service' or spec.get('type') not in ('NodePort', 'LoadBalancer'):
            return
        before = {(p.get('port'), p.get('protocol', 'TCP')): p.get('nodePort')
                  for p in ((current or {}).get('spec') or {}).get('ports') or []}
        for port in spec.get('ports') or []:
            if port.get('nodePort'):
                continue
            kept = before.get((port.get('port'), port.get('protocol', 'TCP')))
            if kept is None:
                kept = self._next_node_port
                self._next_node_port += 1
            port['nodePort'] = kept

    def _stamp_version(self, obj: dict) -> dict:
        self._version += 1
        obj.setdefault('metadata', {})['resourceVersion'] = str(self._version)
        return obj

    def _kind(self, request: rendering.Request) -> str:
        r = request.resource
        return KINDS.get((r.group, r.version, r.plural), r.plural.capitalize())

    def _api_version(self, request: rendering.Request) -> str:
        r = request.resource
        return f'{r.group}/{r.version}' if r.group else r.version

    def _current(self, key: tuple) -> dict | None:
        obj = self._objects._objects.get(key)
        return None if obj is None or obj.deleted else obj.raw

    async def _emit(self, request: rendering.Request, kind: str, obj: dict) -> None:
        event = {'type': kind, 'object': obj}
        self._log.append((int(obj['metadata']['resourceVersion']), request.resource, event))
        await self._buses[request.resource].put(event)

    @staticmethod
    def _ok(obj: dict, status: int = 200) -> aiohttp.web.StreamResponse:
        return aiohttp.web.json_response(obj, status=status)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.url.path == '/_emulator/calls':
            return self._ok(dict(self._calls))
        if request.resource is not None and request.resource.plural is not None:
            verb = 'put' if request.method == enums.method.PUT else str(request.action.value).lower()
            self._calls[f'{verb} {request.resource.plural}{"/" + request.subresource if request.subresource else ""}'] += 1
        discovery = request.resource is None or request.resource.plural is None
        put = request.method == enums.method.PUT
        if discovery or request.action == enums.action.WATCH or (request.action is None and not put):
            return await super()._handle(request)
        async with self._lock:
            if request.action == enums.action.LIST:
                return self._ok(self._list(request))
            if request.action == enums.action.FETCH:
                key = (request.resource, request.namespace, request.name)
                current = self._current(key)
                if current is None or request.subresource not in (None, 'status'):
                    raise error(404, 'NotFound', f'{request.resource.plural} "{request.name}" not found')
                return self._ok(current)
            if request.action == enums.action.CREATE:
                return await self._create(request)
            if request.action == enums.action.DELETE:
                return await self._delete(request)
            return await self._write(request)

    def _list(self, request: rendering.Request) -> dict:
        selector = request.params.get('labelSelector')
        items = [
            obj.raw for (res, ns, _), obj in self._objects.items()
            if res == request.resource and not obj.deleted
            and (request.namespace is None or ns == request.namespace)
            and matches(selector, obj.raw)
        ]
        return {
            'apiVersion': self._api_version(request),
            'kind': f'{self._kind(request)}List',
            'metadata': {'resourceVersion': str(self._version)},
            'items': items,
        }

    async def _serve_watch(self, request: rendering.Request):
        yield b''
        bus = self._buses[request.resource]
        since = request.params.get('resourceVersion', '')
        async with self._lock:
            mark = await bus.mark()
            if since in ('', '0'):
                # No version: the current state first, as ADDED events.
                backlog = [{'type': 'ADDED', 'object': obj} for obj in self._list(request)['items']]
            elif self._log and int(since) < self._log[0][0] - 1:
                backlog = [{'type': 'ERROR', 'object': {
                    'kind': 'Status', 'apiVersion': 'v1', 'status': 'Failure', 'code': 410,
                    'reason': 'Expired', 'message': f'too old resource version: {since}'}}]
            else:
                # From a version: only what happened after it, like the API server's watch cache.
                backlog = [e for rv, res, e in self._log if rv > int(since) and res == request.resource]
        selector = request.params.get('labelSelector')
        for event in backlog:
            if event['type'] == 'ERROR' or self._wanted(request, selector, event['object']):
                yield event
        async for event in bus.stream(since=mark):
            if self._wanted(request, selector, event['object']):
                yield event

    @staticmethod
    def _wanted(request: rendering.Request, selector: str | None, obj: dict) -> bool:
        meta = obj.get('metadata', {})
        return (request.namespace in (None, meta.get('namespace'))
                and request.name in (None, meta.get('name'))
                and matches(selector, obj))

    async def _create(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        body = request.data
        if not isinstance(body, dict):
            raise error(400, 'BadRequest', 'the body must be a JSON object')
        meta = body.setdefault('metadata', {})
        if not meta.get('name') and meta.get('generateName'):
            meta['name'] = meta['generateName'] + uuid.uuid4().hex[:5]
        if not meta.get('name'):
            raise error(422, 'Invalid', 'metadata.name: Required value')
        key = (request.resource, request.namespace or meta.get('namespace'), meta['name'])
        if self._current(key) is not None:
            raise error(409, 'AlreadyExists', f'{request.resource.plural} "{meta["name"]}" already exists')
        obj = await self._new_object(request, key, body)
        manager = request.params.get('fieldManager')
        self._owners[key] = {p: manager for p in leaves(obj) if manager and p not in IDENTITY}
        return self._ok(obj, 201)

    async def _new_object(self, request: rendering.Request, key: tuple, body: dict) -> dict:
        obj = copy.deepcopy(body)
        meta = obj.setdefault('metadata', {})
        meta.update(
            name=key[2], uid=str(uuid.uuid4()), generation=1,
            creationTimestamp=datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ'))
        if key[1] is not None:
            meta['namespace'] = key[1]
        obj.setdefault('apiVersion', self._api_version(request))
        obj.setdefault('kind', self._kind(request))
        self._allocate_node_ports(obj, None)
        self._stamp_version(obj)
        if key in self._objects._objects:
            self._objects._objects[key].create(obj)
        else:
            self._objects[key] = obj
        await self._emit(request, 'ADDED', obj)
        return obj

    async def _delete(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        key = (request.resource, request.namespace, request.name)
        current = self._current(key)
        if current is None:
            raise error(404, 'NotFound', f'{request.resource.plural} "{request.name}" not found')
        if current['metadata'].get('finalizers'):
            if current['metadata'].get('deletionTimestamp'):
                return self._ok(current)
            new = copy.deepcopy(current)
            new['metadata']['deletionTimestamp'] = datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')
            return self._ok(await self._replace(request, key, new))
        return self._ok(await self._remove(request, key, current))

    async def _remove(self, request: rendering.Request, key: tuple, current: dict) -> dict:
        gone = self._stamp_version(copy.deepcopy(current))
        self._objects._objects[key].delete()
        self._owners.pop(key, None)
        await self._emit(request, 'DELETED', gone)
        return gone

    async def _replace(self, request: rendering.Request, key: tuple, new: dict) -> dict:
        """Stores a new version, or nothing when nothing changed (no version, no event)."""
        current = self._current(key)
        strip = lambda o: {**o, 'metadata': {k: v for k, v in o['metadata'].items() if k != 'resourceVersion'}}
        if strip(new) == strip(current):
            return current
        if new.get('spec') != current.get('spec'):
            new['metadata']['generation'] = current['metadata'].get('generation', 1) + 1
        self._stamp_version(new)
        meta = new['metadata']
        if meta.get('deletionTimestamp') and not meta.get('finalizers'):
            self._objects._objects[key].create(new)
            return await self._remove(request, key, new)
        self._objects._objects[key].create(new)
        await self._emit(request, 'MODIFIED', new)
        return new

    async def _write(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        key = (request.resource, request.namespace, request.name)
        current = self._current(key)
        content_type = request.headers.get('Content-Type', '').split(';')[0].strip()
        body = request.data
        manager = request.params.get('fieldManager')
        if request.subresource not in (None, 'status'):
            raise error(404, 'NotFound', f'no subresource {request.subresource}')
        if content_type == 'application/apply-patch+yaml':
            if not manager:
                raise error(400, 'BadRequest', 'fieldManager is required for apply patch')
            if not isinstance(body, dict):
                raise error(400, 'BadRequest', 'an apply patch must be a JSON object')
            if current is None:
                if request.subresource:
                    raise error(404, 'NotFound', f'{request.resource.plural} "{request.name}" not found')
                obj = await self._new_object(request, key, body)
                self._owners[key] = {p: manager for p in leaves(body) if p not in IDENTITY}
                return self._ok(obj, 201)
            new = self._apply(key, current, body, manager, request.params.get('force') == 'true')
        else:
            if current is None:
                raise error(404, 'NotFound', f'{request.resource.plural} "{request.name}" not found')
            if request.method == enums.method.PUT:
                if not isinstance(body, dict):
                    raise error(400, 'BadRequest', 'the body must be a JSON object')
                new = copy.deepcopy(body)
            elif content_type == 'application/json-patch+json':
                try:
                    new = jsonpatch.apply_patch(current, null_tests_pass(current, body))
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                    raise error(422, 'Invalid', f'the JSON patch failed: {e}')
            elif content_type in ('application/merge-patch+json', 'application/strategic-merge-patch+json'):
                new = merge(current, body)
            else:
                raise error(415, 'UnsupportedMediaType', f'unsupported patch type {content_type!r}')
            sent_version = (body.get('metadata') or {}).get('resourceVersion') if isinstance(body, dict) else None
            if sent_version and sent_version != current['metadata']['resourceVersion']:
                raise error(409, 'Conflict', 'the object has been modified; please apply your changes to the latest version and try again')
            owners = self._owners.setdefault(key, {})
            before, after = leaves(current), leaves(new)
            for path in set(before) | set(after):
                if before.get(path) != after.get(path) and path not in IDENTITY:
                    if path in after and manager:
                        owners[path] = manager
                    elif path not in after:
                        owners.pop(path, None)
        # The status subresource and the main resource never write each other's half.
        if request.subresource == 'status':
            new = {**current, 'status': new.get('status')} if new.get('status') is not None else {
                k: v for k, v in current.items() if k != 'status'}
        elif 'status' in current:
            new['status'] = current['status']
        else:
            new.pop('status', None)
        new.setdefault('metadata', {})
        for field in ('name', 'namespace', 'uid', 'creationTimestamp', 'generation'):
            if field in current['metadata']:
                new['metadata'][field] = current['metadata'][field]
        if current['metadata'].get('deletionTimestamp'):
            new['metadata']['deletionTimestamp'] = current['metadata']['deletionTimestamp']
        new.setdefault('kind', current.get('kind'))
        self._allocate_node_ports(new, current)
        return self._ok(await self._replace(request, key, new))

    def _apply(self, key: tuple, current: dict, body: dict, manager: str, force: bool) -> dict:
        owners = self._owners.setdefault(key, {})
        applied = {p: v for p, v in leaves(body).items() if p not in IDENTITY}
        have = leaves(current)
        conflicts = [
            (owners[p], p) for p, v in applied.items()
            if owners.get(p) not in (None, manager) and have.get(p) != v
        ]
        if conflicts and not force:
            names = ', '.join(f'conflict with "{m}": .{".".join(map(str, p))}' for m, p in conflicts)
            raise error(409, 'Conflict', f'Apply failed with {len(conflicts)} conflict(s): {names}')
        new = merge(current, body)
        # Fields this manager applied before and dropped now are removed, as SSA does.
        for path, owner in list(owners.items()):
            if owner == manager and path not in applied:
                remove_path(new, path)
                del owners[path]
        for path in applied:
            owners[path] = manager
        return new


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, default=0)
    args = parser.parse_args()
    async with Emulator() as emulator, kmock.Server(emulator, port=args.port) as server:
        print(f'listening on {server.port}', flush=True)
        # The test owns this process: it ends when the test closes our stdin.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == '__main__':
    asyncio.run(main())

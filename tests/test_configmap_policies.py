"""Policies the GitOps way (issue 17): a ConfigMap of policy files mounted as a directory is a
store of its own. Kubelet updates such a volume by swapping its ``..data`` symlink; every
worker follows the swap within a couple of seconds, a bad version keeps the last good set
(and says which file and policy), and Redis keeps the revocations (``store.policies`` beside
``store.url``)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz.clock import SYSTEM_CLOCK
from extauthz.errors import ConfigError, PolicyInvalid, StoreUnavailable
from extauthz.policy.model import parse_policies
from extauthz.policy.store import FilePolicyStore, RedisPolicyStore, open_store
from extauthz.policy.sync import PolicySnapshot, followed
from extauthz.store.follow import follow_file
from tests.support.cli import refused, run_cli
from tests.support.configmap import ConfigMapVolume
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.poll import eventually, until
from tests.support.redis import RedisServer
from tests.support.stack import ExtAuthz
from tests.support.workers import Worker, all_answer, one_per_worker


def admin(*groups: str, pid: str = "admin") -> str:
    return yaml.safe_dump({"id": pid, "match": {"paths": [{"prefix": "/admin/"}]},
                           "require": {"claims": {"groups": list(groups)}}})


def public(pid: str = "public") -> str:
    return yaml.safe_dump({"id": pid, "match": {"paths": [{"prefix": "/public/"}]},
                           "require": {"authenticated": False}})


BROKEN = yaml.safe_dump({"id": "broken", "match": {"paths": [{"prefix": "/b/"}]},
                         "require": {"no-such-rule": True}})


async def test_a_configmap_volume_is_read_through_its_data_symlink_without_its_dot_entries(
    tmp_path: Path,
) -> None:
    volume = ConfigMapVolume(tmp_path / "policies")
    volume.write({"admin.yaml": admin("sre"), "public.yml": public()})
    (volume.path / ".scratch.yaml").write_text(BROKEN)  # a dot-file is never a policy file
    store = FilePolicyStore(str(volume.path))
    loaded = await store.load()
    assert sorted(p.id for p in loaded.policies) == ["admin", "public"]
    assert store.is_dir


async def test_every_kubelet_swap_is_a_change_even_when_names_and_sizes_stay(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "policies")
    volume.write({"admin.yaml": admin("sre")})
    store = FilePolicyStore(str(volume.path))
    before, first = store.signature(), (await store.load()).revision
    volume.write({"admin.yaml": admin("dev")})  # the same name, the same size
    assert store.signature() != before
    assert (await store.load()).revision != first
    assert (await store.load()).policies[0].document["require"]["claims"] == {"groups": ["dev"]}


async def test_a_data_symlink_that_points_nowhere_keeps_the_last_good_set(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "policies")
    volume.write({"admin.yaml": admin("sre")})
    store = FilePolicyStore(str(volume.path))
    snapshot = PolicySnapshot(SYSTEM_CLOCK)
    snapshot.install(await store.load())
    task = asyncio.create_task(follow_file(store.signature, followed(store, snapshot), 0.02))
    try:
        data = volume.path / "..data"
        shutil.rmtree(volume.path / os.readlink(data))  # never "no policies": unreadable
        with pytest.raises(StoreUnavailable, match=r"\.\.data points nowhere"):
            await store.load()
        await eventually(lambda: snapshot.error is not None and "points nowhere" in snapshot.error)
        assert snapshot.index is not None
        assert list(snapshot.index.by_id) == ["admin"]
        volume.write({"admin.yaml": admin("sre"), "public.yaml": public()})
        await eventually(lambda: snapshot.index is not None and len(snapshot.index.by_id) == 2)
        assert snapshot.error is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_same_policy_id_in_two_files_is_refused_naming_both_files(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "policies")
    volume.write({"admin.yaml": admin("sre"), "copy.yaml": admin("dev")})
    with pytest.raises(PolicyInvalid) as e:
        await FilePolicyStore(str(volume.path)).load()
    assert e.value.message == (f"{volume.path / 'copy.yaml'}: policy 'admin' is also defined in "
                               f"{volume.path / 'admin.yaml'}; ids must be unique across the files")


async def test_a_bad_file_is_named_with_the_policy_in_it(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "policies")
    volume.write({"admin.yaml": admin("sre"), "broken.yaml": BROKEN})
    with pytest.raises(PolicyInvalid) as e:
        await FilePolicyStore(str(volume.path)).load()
    assert e.value.message.startswith(f"{volume.path / 'broken.yaml'}: policy 'broken'")


async def test_a_configmap_volume_is_not_written_to(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "policies")
    volume.write({"admin.yaml": admin("sre")})
    store = FilePolicyStore(str(volume.path))
    with pytest.raises(PolicyInvalid, match=r"Kubernetes ConfigMap volume .* change the ConfigMap"):
        await store.apply(parse_policies([yaml.safe_load(public())]))
    with pytest.raises(PolicyInvalid, match="change the ConfigMap"):
        await store.delete("admin")
    assert [p.id for p in (await store.load()).policies] == ["admin"]


async def test_store_policies_reads_files_while_store_url_is_redis(tmp_path: Path) -> None:
    assert isinstance(open_store("redis://h:6379/0", "p:", 1, str(tmp_path)), FilePolicyStore)
    assert isinstance(open_store("redis+sentinel://h:26379/mymaster", "p:", 1), RedisPolicyStore)
    with pytest.raises(ConfigError, match="both say where the policies are"):
        open_store(f"file://{tmp_path}/p.yaml", "p:", 1, str(tmp_path))
    with pytest.raises(ConfigError, match="give the path of a policy file or directory"):
        open_store("redis://h:6379/0", "p:", 1, f"file://{tmp_path}")


def _config(idp: LocalIssuer, redis: RedisServer, volume: ConfigMapVolume) -> dict[str, Any]:
    return {"issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
            "store": {"url": redis.url, "prefix": "gitops:", "policies": str(volume.path)},
            "default_action": "authenticated"}


def test_a_configmap_swap_reaches_every_worker_within_two_seconds_and_redis_keeps_revocations(
    tmp_path: Path, redis: RedisServer,
) -> None:
    idp = LocalIssuer()
    volume = ConfigMapVolume(tmp_path / "policies")
    volume.write({"admin.yaml": admin("sre"), "public.yaml": public()})
    config = _config(idp, redis, volume)
    cli_config = tmp_path / "cli.yaml"
    cli_config.write_text(yaml.safe_dump(config))
    service = ExtAuthz(tmp_path, config, args=["--workers", "2"])  # default poll_interval: 1 s
    workers: list[Worker] = []
    try:
        alice = idp.mint("ES256", sub="alice", groups=["sre"])
        bob = idp.mint("ES256", sub="bob", groups=["dev"])
        mallory = idp.mint("ES256", sub="mallory", groups=["dev"])
        service.start()
        workers = one_per_worker(service.grpc_port, 2, token=alice)
        all_answer(workers, 403, 1, bob, path="/admin/users")
        all_answer(workers, 200, 1, None, path="/public/page")

        # The update kubelet makes when the ConfigMap changes: every worker, within ~2 s.
        volume.write({"admin.yaml": admin("sre", "dev"), "public.yaml": public()})
        took = all_answer(workers, 200, 2.5, bob, path="/admin/users")
        print(f"\nconfigmap swap applied in every worker after {took:.2f}s")

        # A bad version (an invalid file, then one id in two files) keeps the last good set.
        assert service.process is not None
        volume.write({"admin.yaml": admin("sre", "dev"), "broken.yaml": BROKEN})
        until(lambda: "broken.yaml: policy 'broken'" in service.process.output(), 5,  # type: ignore[union-attr]
              what=lambda: service.process.output()[-2000:])  # type: ignore[union-attr]
        volume.write({"admin.yaml": admin("sre"), "copy.yaml": admin("sre", pid="admin")})
        until(lambda: "copy.yaml: policy 'admin' is also defined in" in service.process.output(), 5,  # type: ignore[union-attr]
              what=lambda: service.process.output()[-2000:])  # type: ignore[union-attr]
        all_answer(workers, 200, 1, bob, path="/admin/users")  # still the last good set
        all_answer(workers, 200, 1, None, path="/public/page")
        assert service.admin("/readyz").status == 200

        # A good version again: in force at once.
        volume.write({"admin.yaml": admin("sre")})
        took = all_answer(workers, 403, 2.5, bob, path="/admin/users")
        print(f"configmap swap after a bad version applied after {took:.2f}s")
        all_answer(workers, 401, 1, None, path="/public/page")  # public.yaml went

        # Redis still holds the revocations: the CLI writes one, every worker enforces it.
        all_answer(workers, 200, 1, mallory)
        revoked = run_cli(cli_config, "revoke", "subject", "--subject", "mallory")
        assert revoked.returncode == 0, revoked.stderr
        all_answer(workers, 401, 3, mallory)
        # `policy explain` holds what a worker holds: the files' policies, Redis' revocations.
        for token, decision in ((bob, "DENY 403 (claim_mismatch)"),
                                (mallory, "DENY 401 (token_revoked)")):
            explained = run_cli(cli_config, "policy", "explain", "--host", "api.example.com",
                                "--path", "/admin/users", "--token", token)
            assert explained.returncode == 1, explained.stderr
            assert f"store: file {volume.path}, revision" in explained.stdout
            assert "revocations: 1 in force" in explained.stdout
            assert f"decision: {decision}" in explained.stdout
        status = run_cli(cli_config, "store", "status")
        assert f"policies: read from {volume.path} (store.policies), not Redis" in status.stdout
        assert "revocations: revision" in status.stdout
        # ...and the policies are changed in git, not with the CLI.
        line = refused(run_cli(cli_config, "policy", "apply", "-f", "-", stdin=public()))
        assert str(volume.path) in line
    finally:
        for w in workers:
            w.channel.close()
        service.stop()
        idp.close()


class _SwappedMidRead(FilePolicyStore):
    """A store whose ConfigMap kubelet updates just after ``..data`` was resolved: the new
    version is swapped in and the old one's removal is part-way when it is listed."""

    swapped = False

    def _version(self) -> Path | None:
        version = super()._version()
        if version is not None and not self.swapped:
            self.swapped = True
            new = self.path / "..v2"
            new.mkdir()
            (new / "admin.yaml").write_text(admin("dev"))
            (new / "public.yaml").write_text(public())
            os.symlink("..v2", self.path / "..data_tmp")
            os.rename(self.path / "..data_tmp", self.path / "..data")
            (version / "public.yaml").unlink()  # kubelet's RemoveAll of the old one, part-way
        return version


async def test_a_configmap_swapped_during_the_read_is_not_a_consistent_version(
    tmp_path: Path,
) -> None:
    volume = ConfigMapVolume(tmp_path / "policies")
    volume.write({"admin.yaml": admin("sre"), "public.yaml": public()})
    store = _SwappedMidRead(str(volume.path))
    with pytest.raises(StoreUnavailable, match=r"\.\.data moved while it was read"):
        await store.load()  # never the old version's admin alone (public.yaml lifted)
    loaded = await store.load()  # the next poll reads the new version whole
    assert sorted(p.id for p in loaded.policies) == ["admin", "public"]
    assert loaded.policies[0].document["require"]["claims"] == {"groups": ["dev"]}


async def test_a_configmap_version_being_removed_is_unavailable_not_an_empty_set(
    tmp_path: Path,
) -> None:
    volume = ConfigMapVolume(tmp_path / "policies")
    volume.write({"admin.yaml": admin("sre"), "public.yaml": public()})
    store = FilePolicyStore(str(volume.path))
    assert len((await store.load()).policies) == 2
    current = volume.path / os.readlink(volume.path / "..data")
    for f in current.iterdir():  # kubelet's RemoveAll, part-way: the files went first
        f.unlink()
    with pytest.raises(StoreUnavailable, match=r"holds no policy file while the volume lists some"):
        await store.load()
    # An empty ConfigMap (no keys: no files at the top either) is "no policies".
    volume.write({})
    assert (await store.load()).policies == ()


async def test_a_configmap_volume_removed_while_serving_is_unavailable_not_an_empty_set(
    tmp_path: Path,
) -> None:
    volume = ConfigMapVolume(tmp_path / "policies")
    volume.write({"admin.yaml": admin("sre")})
    store = FilePolicyStore(str(volume.path))
    assert [p.id for p in (await store.load()).policies] == ["admin"]
    shutil.rmtree(volume.path)
    with pytest.raises(StoreUnavailable, match="does not exist any more"):
        await store.load()


DENY_ADMIN = yaml.safe_dump({"id": "deny-admin", "match": {"paths": [{"prefix": "/admin/"}]},
                             "action": "deny"})


def test_serve_keeps_enforcing_a_deny_policy_when_its_directory_is_removed(
    tmp_path: Path, redis: RedisServer,
) -> None:
    idp = LocalIssuer()
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "deny-admin.yaml").write_text(DENY_ADMIN)
    config = {"issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
              "store": {"url": redis.url, "prefix": "gone:", "policies": str(directory),
                        "poll_interval": 0.2},
              "default_action": "authenticated"}
    service = ExtAuthz(tmp_path, config)
    workers: list[Worker] = []
    try:
        mallory = idp.mint("ES256", sub="mallory", groups=["dev"])
        service.start()
        workers = one_per_worker(service.grpc_port, 1, token=mallory)
        all_answer(workers, 403, 1, mallory, path="/admin/users")
        all_answer(workers, 200, 1, mallory, path="/other")
        shutil.rmtree(directory)  # the mount went away, a git-sync target was removed
        assert service.process is not None
        until(lambda: f"{directory} does not exist any more" in service.process.output(), 5,  # type: ignore[union-attr]
              what=lambda: service.process.output()[-2000:])  # type: ignore[union-attr]
        assert "ERROR" in service.process.output() or '"error"' in service.process.output()
        for _ in range(5):  # many polls later: the deny policy still holds
            all_answer(workers, 403, 1, mallory, path="/admin/users")
            time.sleep(0.3)
    finally:
        for w in workers:
            w.channel.close()
        service.stop()
        idp.close()

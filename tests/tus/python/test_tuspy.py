"""tuspy (PyPI) against the real tranche: a file in many small PATCHes, an
empty file, every PATCH with an Upload-Checksum (sha1), a checksum that does
not match, an upload stopped part-way and resumed by a new uploader from
tuspy's URL store and from the bare URL, tranche killed with SIGKILL while
tuspy uploads and restarted, tuspy's aiohttp-based AsyncUploader, and bearer
tokens. Each upload ends by comparing the server's SHA-256 and the
download with the file's."""

import asyncio
import hashlib
import os
import shutil
import tempfile
import threading
import time
import unittest

from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed
from tusclient.storage import filestorage
from tusclient.uploader import Uploader

from harness import Tranche, sha256_of

KiB = 1024
MiB = 1024 * KiB


class TuspyTest(unittest.TestCase):
    def setUp(self):
        self.server = Tranche()
        self.addCleanup(self.server.stop)
        self.tmp = tempfile.mkdtemp(prefix="tranche-tuspy-files-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.client = tus_client.TusClient(self.server.endpoint)

    def make_file(self, name, size):
        data = os.urandom(size)
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path, data

    def assert_stored(self, url, data, filename=None):
        upload_id = url.rstrip("/").rsplit("/", 1)[-1]
        upload = self.server.completed(upload_id)
        self.assertEqual(upload["status"], "completed", upload)
        self.assertEqual(upload["id"], upload_id, "the tus URL names the API v1 upload")
        self.assertEqual(upload["file"]["size"], len(data))
        self.assertEqual(upload["file"]["sha256"], sha256_of(data), "the server's SHA-256 is the file's")
        self.assertEqual(sha256_of(self.server.download(upload_id)), sha256_of(data), "the download serves the same bytes")
        if filename is not None:
            self.assertEqual(upload["filename"], filename)
        return upload

    def test_small_chunks(self):
        path, data = self.make_file("survey.csv", 3 * MiB + 5)
        uploader = self.client.uploader(path, chunk_size=256 * KiB, metadata={"filename": "survey.csv", "filetype": "text/csv"})
        uploader.upload()
        self.assertEqual(uploader.offset, len(data))
        self.assert_stored(uploader.url, data, filename="survey.csv")

    def test_an_empty_file(self):
        path, data = self.make_file("empty.txt", 0)
        uploader = self.client.uploader(path, metadata={"filename": "empty.txt"})
        uploader.upload()
        self.assert_stored(uploader.url, data, filename="empty.txt")

    def test_every_patch_with_a_sha1_checksum(self):
        path, data = self.make_file("checked.bin", 2 * MiB + 77)
        uploader = self.client.uploader(path, chunk_size=300 * KiB, upload_checksum=True)
        self.assertEqual(uploader.checksum_algorithm_name, "sha1")
        uploader.upload()
        self.assert_stored(uploader.url, data)

    def test_a_wrong_checksum_is_refused_and_its_bytes_do_not_count(self):
        path, data = self.make_file("lying.bin", 512 * KiB)

        class LyingUploader(Uploader):
            # A sha1 digest of other bytes: what a corrupted chunk looks like.
            CHECKSUM_ALGORITHM_PAIR = ("sha1", lambda chunk: hashlib.sha1(b"not " + chunk))

        uploader = LyingUploader(path, client=self.client, chunk_size=128 * KiB, upload_checksum=True)
        with self.assertRaises(TusUploadFailed) as refused:
            uploader.upload_chunk()
        self.assertEqual(refused.exception.status_code, 460, refused.exception.response_content)
        self.assertEqual(uploader.get_offset(), 0, "the refused PATCH's bytes do not count")

        honest = self.client.uploader(path, chunk_size=128 * KiB, upload_checksum=True, url=uploader.url)
        honest.upload()
        self.assert_stored(uploader.url, data)

    def test_a_stopped_upload_resumes_from_the_url_store(self):
        path, data = self.make_file("resume.bin", 4 * MiB)
        storage = filestorage.FileStorage(os.path.join(self.tmp, "urls.json"))
        first = self.client.uploader(path, chunk_size=256 * KiB, store_url=True, url_storage=storage)
        first.upload(stop_at=1 * MiB + 1)
        self.assertGreater(first.offset, 1 * MiB)
        # A new process would start here: a new uploader finds the URL by the
        # file's fingerprint and asks the server for the offset.
        second = self.client.uploader(path, chunk_size=256 * KiB, store_url=True, url_storage=storage)
        self.assertEqual(second.url, first.url, "the same upload")
        self.assertEqual(second.offset, first.offset, "the server kept what was acknowledged")
        self.assertGreater(second.offset, 0)
        second.upload()
        self.assert_stored(second.url, data)

    def test_a_stopped_upload_resumes_from_its_url(self):
        path, data = self.make_file("by-url.bin", 2 * MiB)
        first = self.client.uploader(path, chunk_size=256 * KiB)
        first.upload(stop_at=600 * KiB)
        # tuspy's last PATCH before stop_at is cut to end there.
        second = self.client.uploader(path, chunk_size=256 * KiB, url=first.url)
        self.assertEqual(second.offset, 600 * KiB, "the server kept what was acknowledged")
        second.upload()
        self.assert_stored(first.url, data)

    def test_tranche_killed_mid_upload_tuspy_retries_and_resumes(self):
        path, data = self.make_file("crash.bin", 6 * MiB)
        retried = []

        class CountingUploader(Uploader):
            def _retry_or_cry(self, error):
                retried.append(type(error).__name__)
                return super()._retry_or_cry(error)

        # Up to 20 tries half a second apart: tranche is back within a second or two.
        uploader = CountingUploader(path, client=self.client, chunk_size=256 * KiB, upload_checksum=True,
                                    retries=20, retry_delay=0.5)
        uploader.upload(stop_at=1 * MiB)
        acknowledged = uploader.offset

        def crash_and_restart():
            # Kill while tuspy is sending: once the server has moved past
            # what was acknowledged before this thread started.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and uploader.get_offset() <= acknowledged:
                time.sleep(0.005)
            self.server.kill()
            time.sleep(0.3)
            self.server.restart()

        crash = threading.Thread(target=crash_and_restart)
        crash.start()
        try:
            uploader.upload()
        finally:
            crash.join()
        self.assertTrue(retried, "the crash cost tuspy at least one failed request")
        self.assert_stored(uploader.url, data)

    def test_async_uploader(self):
        path, data = self.make_file("async.bin", 1 * MiB + 9)
        uploader = self.client.async_uploader(path, chunk_size=256 * KiB)
        asyncio.run(uploader.upload())
        self.assert_stored(uploader.url, data)


class TuspyWithAuthTest(unittest.TestCase):
    API_KEY = "tuspy-test-key-0123456789abcdefgh"

    def setUp(self):
        self.server = Tranche(
            env={
                "TRANCHE_AUTH__ENABLED": "true",
                "TRANCHE_AUTH__API_KEYS": f'["{self.API_KEY}"]',
                "TRANCHE_AUTH__JWT_SECRET": "tuspy-test-secret-0123456789-abcdefgh",
            },
            api_key=self.API_KEY,
        )
        self.addCleanup(self.server.stop)

    def test_the_bearer_token_goes_on_every_request(self):
        data = os.urandom(700 * KiB)
        tmp = tempfile.mkdtemp(prefix="tranche-tuspy-files-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "secret.bin")
        with open(path, "wb") as f:
            f.write(data)
        anonymous = tus_client.TusClient(self.server.endpoint)
        with self.assertRaises((TusCommunicationError, TusUploadFailed)) as refused:
            anonymous.uploader(path, chunk_size=256 * KiB).upload()
        self.assertEqual(refused.exception.status_code, 401)
        client = tus_client.TusClient(self.server.endpoint, headers=self.server.headers)
        uploader = client.uploader(path, chunk_size=256 * KiB)
        uploader.upload()
        upload_id = uploader.url.rstrip("/").rsplit("/", 1)[-1]
        upload = self.server.completed(upload_id)
        self.assertEqual(upload["file"]["sha256"], sha256_of(data))


if __name__ == "__main__":
    unittest.main()

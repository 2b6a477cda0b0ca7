"""How an upload's images are cut into classification tasks (cases.tasks): a small first task for a quick
first label, then full ones."""

from unittest import mock

from cases import tasks


def test_a_large_upload_starts_with_a_small_task_then_grows_to_full_tasks():
    ids = list(range(1000, 1100))

    chunks = tasks.task_chunks(ids)

    assert [len(chunk) for chunk in chunks] == [4, 8, 16, 16, 16, 16, 16, 8]
    assert [image_id for chunk in chunks for image_id in chunk] == ids  # every image once, in upload order


def test_an_upload_of_up_to_a_full_task_is_one_task():
    assert tasks.task_chunks([7, 8, 9]) == [[7, 8, 9]]
    assert tasks.task_chunks(list(range(tasks.IMAGES_PER_TASK))) == [list(range(tasks.IMAGES_PER_TASK))]
    assert tasks.task_chunks([]) == []


def test_an_upload_just_over_a_full_task_still_starts_small():
    assert [len(chunk) for chunk in tasks.task_chunks(list(range(tasks.IMAGES_PER_TASK + 4)))] == [4, 8, 8]


def test_no_task_is_larger_than_images_per_task():
    chunks = tasks.task_chunks(list(range(500)))

    assert max(len(chunk) for chunk in chunks) == tasks.IMAGES_PER_TASK
    assert len(chunks[0]) == tasks.FIRST_TASK_IMAGES


def test_enqueue_sends_one_task_per_chunk():
    with mock.patch.object(tasks.classify_images, "apply_async") as apply_async:
        sent = tasks.enqueue_classification(image_ids=range(30))

    assert sent == 4
    assert [call.kwargs["args"][0] for call in apply_async.call_args_list] == [
        list(range(0, 4)),
        list(range(4, 12)),
        list(range(12, 28)),
        list(range(28, 30)),
    ]

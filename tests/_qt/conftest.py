import pytest

from napari_dlbio import samples


@pytest.fixture
def nuclei2d():
    img, lab = samples.nuclei_2d((224, 160), seed=1)
    return img, lab


@pytest.fixture
def records():
    """Notifications dispatched during the test (napari keeps them in a list)."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)

    class View:
        @property
        def errors(self):
            return [n.message for n in notification_manager.records[start:] if n.severity == "error"]

        @property
        def all(self):
            return [n.message for n in notification_manager.records[start:]]

    return View()

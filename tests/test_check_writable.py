"""utils.fileio.check_writable: the one output-path check before any work (apis.runner's --out / --work-dir and the
anchor search's --out / --work-dir / --storage): one UserError naming the flag, the path and why; nothing created."""
import pytest

from mmdet_custom.apis.runner import check_writable as runner_check_writable
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import check_writable


def test_check_writable_refuses_with_the_flag_and_creates_nothing(tmp_path):
    assert runner_check_writable is check_writable  # one function, re-exported where tools import it
    a_file = tmp_path / 'a_file'
    a_file.write_text('mine')
    check_writable(tmp_path / 'new' / 'deeper' / 'out.json', '--out')      # missing folders: the writer makes them
    check_writable(tmp_path / 'plots', '--work-dir', is_dir=True)
    check_writable(a_file, '--out')                                       # an existing file is replaced atomically
    cases = (
        (dict(path=tmp_path, flag='--out'), f'--out {tmp_path} is a folder; give a file name'),
        (dict(path=a_file, flag='--work-dir', is_dir=True), f'--work-dir {a_file} is a file, not a folder'),
        (dict(path=a_file / 'x' / 'out.py', flag='--out'),
         f'--out {a_file}/x/out.py cannot be written: {a_file} is a file, not a folder'),
        (dict(path=a_file / 'plots', flag='--work-dir', is_dir=True),
         f'--work-dir {a_file}/plots cannot be written: {a_file} is a file, not a folder'),
    )
    for kwargs, message in cases:
        with pytest.raises(UserError) as info:
            check_writable(**kwargs)
        assert str(info.value).startswith(message), info.value
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a_file'] and a_file.read_text() == 'mine'

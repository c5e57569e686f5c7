"""mmdet_custom: an MMDetection 3.x extension for instance segmentation of aerial imagery (iSAID)."""
from setuptools import find_packages, setup


def read_version(path='mmdet_custom/version.py'):
    """The package's ``__version__``, read without importing the package (as mmdet's setup.py does)."""
    namespace = {}
    with open(path) as f:
        exec(compile(f.read(), path, 'exec'), namespace)
    return namespace['__version__']


def read_requirements(path):
    with open(path) as f:
        return [line.split('#')[0].strip() for line in f if line.split('#')[0].strip()]


setup(
    name='mmdet_custom',
    version=read_version(),
    description='MMDetection 3.x extension for aerial (iSAID), cell and COCO-subset instance segmentation',
    packages=find_packages(include=['mmdet_custom', 'mmdet_custom.*']),
    # the configs ship inside the package, where mmdet ships its own (mmdet/.mim/configs), found through
    # mmdet_custom.utils.paths.config_path: mmdet_custom/.mim/configs links to configs/, a wheel holds a copy
    package_data={'mmdet_custom': ['.mim/configs/**/*.py']},
    python_requires='>=3.10',
    # torch and mmcv are installed by scripts/install.sh (mmcv 2.1.0 must be built against the local torch)
    install_requires=read_requirements('requirements/runtime.txt'),
    extras_require={'wandb': [r for r in read_requirements('requirements/optional.txt') if r.startswith('wandb')],
                    'geo': [r for r in read_requirements('requirements/optional.txt') if not r.startswith('wandb')],
                    'tests': read_requirements('requirements/tests.txt')},
)

"""mmdet_custom: an MMDetection 3.x extension for instance segmentation of aerial imagery (iSAID)."""
from setuptools import find_packages, setup


def read_requirements(path):
    with open(path) as f:
        return [line.split('#')[0].strip() for line in f if line.split('#')[0].strip()]


setup(
    name='mmdet_custom',
    version='0.1.0',
    description='MMDetection 3.x extension for aerial (iSAID), cell and COCO-subset instance segmentation',
    packages=find_packages(include=['mmdet_custom', 'mmdet_custom.*']),
    # the configs ship inside the package, where mmdet ships its own (mmdet/.mim/configs) and mmengine looks for
    # 'mmdet_custom::' configs: mmdet_custom/.mim/configs links to configs/, a wheel holds a copy of the files
    package_data={'mmdet_custom': ['.mim/configs/**/*.py']},
    python_requires='>=3.10',
    # torch and mmcv are installed by scripts/install.sh (mmcv 2.1.0 must be built against the local torch)
    install_requires=read_requirements('requirements/runtime.txt'),
    extras_require={'wandb': [r for r in read_requirements('requirements/optional.txt') if r.startswith('wandb')],
                    'geo': [r for r in read_requirements('requirements/optional.txt') if not r.startswith('wandb')],
                    'tests': read_requirements('requirements/tests.txt')},
)

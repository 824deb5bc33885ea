"""MkDocs hook: pages that live outside docs/ join the site under fixed names.

The notebooks, experiments/README.md, the results READMEs and CHANGELOG.md stay where people
look for them in the repository; this hook adds them to the build (before mkdocs-jupyter sees
the file list) instead of keeping copies in docs/.
"""

from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent

# site path -> repository path
OUTSIDE = {
    "experiments.md": "experiments/README.md",
    "results/protonic_onen2022.md": "results/protonic_onen2022/README.md",
    "changelog.md": "CHANGELOG.md",
    "notebooks/README.md": "notebooks/README.md",
    "results/energy/rt_mnist_default.png": "results/energy/rt_mnist_default.png",
}


@event_priority(100)  # before mkdocs-jupyter claims the notebooks
def on_files(files, config):
    for site_path, repo_path in OUTSIDE.items():
        source = ROOT / repo_path
        if not source.is_file():
            raise FileNotFoundError(f"docs/hooks.py: {repo_path} is listed for the site but does not exist")
        files.append(File.generated(config, site_path, abs_src_path=str(source)))
    # Notebooks as plain files rooted at the repository (mkdocs-jupyter wraps those, not generated ones).
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        rel = notebook.relative_to(ROOT).as_posix()
        files.append(
            File(rel, src_dir=str(ROOT), dest_dir=config["site_dir"], use_directory_urls=config["use_directory_urls"])
        )
    return files

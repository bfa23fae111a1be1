"""beets plugin: tag a beets library with samplecnn (the 50 tags of its model and your own tag packs).

Enable it with `plugins: samplecnn` in beets' config.yaml (this module ships with samplecnn, in beets' `beetsplug`
namespace package); install with `pip install 'samplecnn[beets]'`. Configuration (every key optional):

    samplecnn:
        model: default        # a registered samplecnn model or a checkpoint path
        tags: []              # tag packs (`samplecnn learn`) whose tags are scored too
        auto: no              # tag new items during `beet import`
        write: no             # `beet samplecnn` also writes SAMPLECNN_TAGS into the files (beets' write path)
        force: no             # re-tag items already tagged by the same model
        device: null          # torch device (default: a GPU if any, else cpu)

`beet samplecnn [-f] [-w | -W] [-t PACK]... [QUERY]` tags the matching items with one model load and stores, as
flexible attributes:
- `samplecnn_model`: the model id (`<name>-<16 hex of the checkpoint's hash>`, as a samplecnn library records it);
- `samplecnn_tags`: the decided tags, the model's then the packs', best first (`beet ls samplecnn_tags:piano`);
- `samplecnn_<tag>`: each tag's song-level score (a float, so `beet ls samplecnn_piano:0.5..` works), the tag's
  name lowercased with every run of other characters as `_` (`no vocals` -> `samplecnn_no_vocals`).

Items whose `samplecnn_model` is this model's id and that already have every pack tag's score are skipped unless
`--force`. A file that is missing or not audio gets one error line; the other items are tagged all the same, and
that item keeps what it had. With writing on, the decided tags go into the files through beets' own write path
(`item.write()`), in the field `samplecnn write-tags` uses (TXXX:SAMPLECNN_TAGS, Vorbis SAMPLECNN_TAGS, MP4
----:org.samplecnn:SAMPLECNN_TAGS), one value per tag; from then on beets' own writes (`beet write`, imports
with `import.write`) carry it too. Scores stay in the beets database.

Loading the plugin imports no torch (every `beet` command loads its plugins): the model is loaded the first time
an item needs tagging.
"""

from __future__ import annotations

import os

import mediafile
from beets import library, ui
from beets.dbcore import types
from beets.plugins import BeetsPlugin

from samplecnn import packs
from samplecnn.errors import SampleCNNError

PREFIX = "samplecnn_"
TAGS_FIELD = "samplecnn_tags"
MODEL_FIELD = "samplecnn_model"
FILE_FIELD = "SAMPLECNN_TAGS"  # the field samplecnn write-tags writes (samplecnn.library.tagwrite)
RESERVED = {TAGS_FIELD, MODEL_FIELD}


def register_media_field() -> None:
    """Make beets' write path (item.write) carry samplecnn_tags into the files, one value per tag."""
    if TAGS_FIELD not in mediafile.MediaFile.__dict__:
        mediafile.MediaFile.add_field(TAGS_FIELD, mediafile.ListMediaField(
            mediafile.MP3ListDescStorageStyle(desc=FILE_FIELD),
            mediafile.MP4ListStorageStyle(f"----:org.samplecnn:{FILE_FIELD}"),
            mediafile.ListStorageStyle(FILE_FIELD),
            mediafile.ASFStorageStyle(f"samplecnn/{FILE_FIELD}"),
        ))
    library.Item._media_fields.add(TAGS_FIELD)


def score_field(tag: str) -> str:
    name = PREFIX + packs.field_name(tag)
    return name + "_score" if name in RESERVED else name  # a tag named "tags" or "model"


class SampleCNNPlugin(BeetsPlugin):
    def __init__(self) -> None:
        super().__init__("samplecnn")
        self.config.add({"model": "default", "tags": [], "auto": False, "write": False, "force": False,
                         "device": None})
        self._tagger = None
        self._types = None
        if self.config["write"].get(bool):
            register_media_field()
        if self.config["auto"].get(bool):
            self.import_stages = [self.imported]

    # -- field types: floats for the scores, a list for the decided tags

    @property
    def item_types(self) -> dict[str, types.Type]:
        if self._types is None:
            names = packs.checkpoint_tags(self.config["model"].as_str())
            for path in self._pack_paths():
                try:
                    names += packs.read_pack(path).tags
                except SampleCNNError:
                    pass  # reported by the command that uses it; `beet ls` must not fail for it
            self._types = {TAGS_FIELD: types.DelimitedString("; "), MODEL_FIELD: types.STRING,
                           **{score_field(t): types.Float(4) for t in names}}
        return self._types

    def _pack_paths(self, extra=()) -> list[str]:
        paths = self.config["tags"].as_str_seq() + list(extra or ())
        return list(dict.fromkeys(os.path.expanduser(p) for p in paths))

    # -- the command and the import stage

    def commands(self) -> list[ui.Subcommand]:
        cmd = ui.Subcommand("samplecnn", help="tag items with samplecnn (its model's tags and your tag packs)")
        cmd.parser.add_option("-f", "--force", action="store_true", default=None,
                              help="re-tag items already tagged by this model")
        cmd.parser.add_option("-w", "--write", action="store_true", default=None,
                              help="also write the decided tags into the files (field SAMPLECNN_TAGS)")
        cmd.parser.add_option("-W", "--nowrite", action="store_false", dest="write",
                              help="do not write the files (the default unless the config says write: yes)")
        cmd.parser.add_option("-t", "--tags", action="append", default=[], metavar="PACK",
                              help="also score the tags of this tag pack (repeatable; added to the config's)")
        cmd.parser.add_option("-m", "--model", help="samplecnn model name or checkpoint (default: the config's)")
        cmd.func = self.command
        return [cmd]

    def command(self, lib, opts, args) -> None:
        force = self.config["force"].get(bool) if opts.force is None else opts.force
        write = self.config["write"].get(bool) if opts.write is None else opts.write
        if opts.model:
            self.config["model"] = opts.model
            self._tagger = None
        if write:
            register_media_field()
        try:
            done = self.tag_items(lib.items(args), force=force, write=write, extra_packs=opts.tags)
        except SampleCNNError as e:
            raise ui.UserError(f"samplecnn: {e}") from None
        skipped = (f", {done['skipped']} already tagged by {done['model_id']} (--force re-tags them)"
                   if done["skipped"] else "")
        failed = f", {done['failed']} failed" if done["failed"] else ""
        ui.print_(f"samplecnn: tagged {done['tagged']} item(s){skipped}{failed}")

    def imported(self, session, task) -> None:
        try:
            self.tag_items(task.imported_items(), force=self.config["force"].get(bool), write=False)
        except SampleCNNError as e:  # a bad model or pack: say so, never stop the import
            self._log.error("not tagged: {}", e)

    # -- the work

    def tag_items(self, items, force: bool = False, write: bool = False, extra_packs=()) -> dict:
        """Tag `items` (one model load at most); returns counts: tagged, skipped, failed, and the model id."""
        model = self.config["model"].as_str()
        model_id = packs.model_id_of(model)
        tag_packs = [packs.read_pack(p) for p in self._pack_paths(extra_packs)]
        for pack in tag_packs:
            pack.check_model(model_id)
        packs.check_tag_names(packs.checkpoint_tags(model), tag_packs)
        wanted = [score_field(t) for pack in tag_packs for t in pack.tags]
        done = {"tagged": 0, "skipped": 0, "failed": 0, "model_id": model_id}
        for item in items:
            if not force and item.get(MODEL_FIELD) == model_id and all(f in item for f in wanted):
                done["skipped"] += 1
                continue
            path = os.fsdecode(item.path)
            tagger = self._load(model)  # a bad checkpoint stops here, with one line, before any item is changed
            try:
                result = tagger.tag(path)
                own = [(pack, pack.scores(result.embedding)) for pack in tag_packs]
            except SampleCNNError as e:
                if e.path is None:
                    raise
                self._log.error("{}: {}", _shown(path), e.reason)
                done["failed"] += 1
                continue
            item[MODEL_FIELD] = model_id
            item[TAGS_FIELD] = result.decisions + [t for pack, scores in own for t in pack.decided(scores)]
            for tag, score in zip(result.tags, result.scores):
                item[score_field(tag)] = round(float(score), 4)
            for pack, scores in own:
                for tag, score in zip(pack.tags, scores):
                    item[score_field(tag)] = round(float(score), 4)
            item.store()
            if write:
                try:
                    item.write()
                except library.FileOperationError as e:
                    self._log.error("{}: not written ({})", _shown(path), e)
                    done["failed"] += 1
                    continue
            self._log.debug("{}: {}", _shown(path), "; ".join(item[TAGS_FIELD]) or "(no tags decided)")
            done["tagged"] += 1
        return done

    def _load(self, model: str):
        if self._tagger is None:
            import samplecnn

            self._tagger = samplecnn.load(model, device=self.config["device"].get())
        return self._tagger


def _shown(path: str) -> str:
    from samplecnn.library.output import quote_path

    return quote_path(path)

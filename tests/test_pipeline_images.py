"""`image:` steps of `.raibid.yml`: what validates, the file:line errors, and the tag templates."""

from __future__ import annotations

import pytest

from raibid.agents.pipeline import ImageSpec, PipelineError, expand_tags, parse, sanitize_ref


def test_an_image_step_parses_with_its_defaults_and_normalised_paths():
    steps = parse("steps:\n  - run: make\n  - name: publish\n    image:\n      name: acme/app\n"
                  "      context: ./sub//dir/\n      dockerfile: sub/dir/Containerfile\n"
                  "      tags: ['${RAIBID_COMMIT}', 'branch-${RAIBID_REF}', 'pr-${RAIBID_PR}', latest]\n"
                  "      platforms: [linux/arm64, linux/amd64]\n      push: false\n      cache: true\n")
    assert steps[0].image is None and steps[0].run == "make"
    spec = steps[1].image
    assert steps[1].run == "" and spec == ImageSpec(
        "acme/app", ("${RAIBID_COMMIT}", "branch-${RAIBID_REF}", "pr-${RAIBID_PR}", "latest"), "sub/dir",
        "sub/dir/Containerfile", ("linux/arm64", "linux/amd64"), push=False, cache=True)
    plain = parse("steps:\n  - image: {name: acme/app}\n")[0]
    assert plain.name == "step-1" and plain.image == ImageSpec("acme/app")
    assert plain.image.tags == ("${RAIBID_COMMIT}",) and plain.image.push is True and plain.image.cache is False
    assert (plain.image.context, plain.image.dockerfile, plain.image.platforms) == (".", "Dockerfile", ("linux/arm64",))


@pytest.mark.parametrize(("image", "message"), [
    ("{}", ".raibid.yml:3: step 1: `image`: `name` is required"),
    ("{name: Acme/App}", ".raibid.yml:3: step 1: `image`: name 'Acme/App' is not an image name"),
    ("{name: app}", ".raibid.yml:3: step 1: `image`: name 'app' is not an image name"),
    ("{name: 'acme/app:v1'}", ".raibid.yml:3: step 1: `image`: name 'acme/app:v1' is not an image name"),
    ("{name: acme//app}", ".raibid.yml:3: step 1: `image`: name 'acme//app' is not an image name"),
    ("{name: acme/app, build_args: {A: b}}", ".raibid.yml:3: step 1: `image`: unknown key 'build_args'"),
    ("{name: acme/app, tags: ['-bad']}", ".raibid.yml:3: step 1: `image`: tag '-bad' expands to '-bad', which is "
                                         "not a tag"),
    ("{name: acme/app, tags: ['v 1']}", ".raibid.yml:3: step 1: `image`: tag 'v 1' expands"),
    ("{name: acme/app, tags: ['${HOME}']}", ".raibid.yml:3: step 1: `image`: tag '${HOME}' uses ${HOME}; a tag "
                                            "may use only ${RAIBID_COMMIT}, ${RAIBID_REF}, ${RAIBID_PR}"),
    ("{name: acme/app, tags: ['$(id)']}", ".raibid.yml:3: step 1: `image`: tag '$(id)' expands"),
    ("{name: acme/app, tags: ['" + "x" * 129 + "']}", ".raibid.yml:3: step 1: `image`: tag 'xxx"),
    ("{name: acme/app, tags: []}", ".raibid.yml:3: step 1: `image`: `tags` is an empty list"),
    ("{name: acme/app, platforms: [windows/amd64]}", ".raibid.yml:3: step 1: `image`: unknown platform "
                                                     "'windows/amd64'"),
    ("{name: acme/app, context: ../other}", ".raibid.yml:3: step 1: `image`: `context`: '../other' must be a "
                                            "relative path inside the checkout"),
    ("{name: acme/app, context: a/../../b}", ".raibid.yml:3: step 1: `image`: `context`: 'a/../../b' must be"),
    ("{name: acme/app, dockerfile: /etc/passwd}", ".raibid.yml:3: step 1: `image`: `dockerfile`: '/etc/passwd' "
                                                  "must be a relative path"),
    ("{name: acme/app, dockerfile: ./}", ".raibid.yml:3: step 1: `image`: `dockerfile` must name a file"),
    ("{name: acme/app, push: 'yes please'}", ".raibid.yml:3: step 1: `image`: `push` must be true or false"),
    ("{name: acme/app, cache: 1}", ".raibid.yml:3: step 1: `image`: `cache` must be true or false"),
    ("acme/app", ".raibid.yml:3: step 1: `image` must be a mapping"),
])
def test_bad_image_steps_name_the_line(image, message):
    with pytest.raises(PipelineError) as e:
        parse(f"env: {{A: b}}\nsteps:\n  - image: {image}\n")
    assert e.value.message.startswith(message), e.value.message


def test_a_step_has_run_or_image_not_both():
    with pytest.raises(PipelineError) as e:
        parse("steps:\n  - run: make\n    image: {name: acme/app}\n")
    assert e.value.message == ".raibid.yml:3: step 1: a step has `run` or `image`, not both"


def test_tag_templates_expand_and_nothing_else_does():
    values = {"RAIBID_COMMIT": "0123abc", "RAIBID_REF": "refs/heads/feature/Login+UI", "RAIBID_PR": "42",
              "HOME": "/root"}
    assert expand_tags(["${RAIBID_COMMIT}", "br-${RAIBID_REF}", "pr-${RAIBID_PR}", "v1.2_x", "${RAIBID_COMMIT}"],
                       values) == ["0123abc", "br-feature-Login-UI", "pr-42", "v1.2_x"]  # a repeat is one tag
    assert expand_tags(["${RAIBID_REF}"], {"RAIBID_REF": "refs/tags/v2.0.1"}) == ["v2.0.1"]
    # ${RAIBID_PR} is empty on a push: a tag that is then not a tag is an error naming it.
    with pytest.raises(ValueError, match=r"tag '\$\{RAIBID_PR\}' expands to ''"):
        expand_tags(["${RAIBID_PR}"], {"RAIBID_COMMIT": "abc"})
    assert expand_tags(["pr-${RAIBID_PR}"], {}) == ["pr-"]


@pytest.mark.parametrize(("ref", "tag"), [
    ("main", "main"), ("refs/heads/release/1.x", "release-1.x"), ("refs/tags/v1", "v1"),
    ("refs/heads/-x", "x"), ("refs/heads/..", "ref"), ("refs/pull/3/head", "refs-pull-3-head"),
    ("refs/heads/" + "a" * 300, "a" * 128), ("refs/heads/é", "ref"),
])
def test_refs_are_sanitised_to_tag_text(ref, tag):
    assert sanitize_ref(ref) == tag

"""Question order for tuning and benchmarks: categories in turn."""

from swift_vllm.engine import load_questions, spread_by_category


def test_spread_takes_categories_in_turn():
    questions = load_questions()  # the packaged dev set: categories in blocks
    spread = spread_by_category(questions, len(questions))
    assert sorted(q["question_id"] for q in spread) == sorted(q["question_id"] for q in questions)
    categories = {q["category"] for q in questions}
    first = [q["category"] for q in spread[: len(categories)]]
    assert sorted(first) == sorted(categories)  # a dozen prompts see every category


def test_questions_without_a_category_are_kept():
    questions = [{"turns": ["a"]}, {"category": "x", "turns": ["b"]}, {"turns": ["c"]}]
    assert [q["turns"][0] for q in spread_by_category(questions, 3)] == ["a", "b", "c"]

//! Cases of the CEL conformance suite (google/cel-spec `tests/simple/testdata`: logic,
//! integer_math, comparisons, fp_math, string, lists, fields, macros `has`) that apply to
//! routing expressions, hand-ported. A case with a value `v` runs as `(expr) == v`
//! (match expressions are boolean); an error case must have no value.

use super::{attrs, eval};
use crate::routing::compile;

enum Expect {
    Value(&'static str),
    Error,
}

use Expect::{Error, Value as V};

const CASES: &[(&str, &str, Expect)] = &[
    // logic.textproto
    ("conditional/true_case", "true ? 1 : 2", V("1")),
    (
        "conditional/false_case",
        "false ? 'foo' : 'bar'",
        V("'bar'"),
    ),
    (
        "conditional/error_case",
        "2 / 0 > 4 ? 'baz' : 'quux'",
        Error,
    ),
    ("conditional/mixed_type", "true ? 'cows' : 17", V("'cows'")),
    ("conditional/bad_type", "'cows' ? false : 17", Error),
    ("AND/all_true", "true && true", V("true")),
    ("AND/all_false", "false && false", V("false")),
    ("AND/false_left", "false && true", V("false")),
    ("AND/false_right", "true && false", V("false")),
    ("AND/short_circuit_type_left", "false && 32", V("false")),
    (
        "AND/short_circuit_type_right",
        "'horses' && false",
        V("false"),
    ),
    (
        "AND/short_circuit_error_left",
        "false && (2 / 0 > 3 ? false : true)",
        V("false"),
    ),
    (
        "AND/short_circuit_error_right",
        "(2 / 0 > 3 ? false : true) && false",
        V("false"),
    ),
    ("AND/error_right", "true && 1/0 != 0", Error),
    ("AND/error_left", "1/0 != 0 && true", Error),
    ("AND/no_overload", "'less filling' && 'tastes great'", Error),
    ("OR/all_true", "true || true", V("true")),
    ("OR/all_false", "false || false", V("false")),
    ("OR/false_left", "false || true", V("true")),
    ("OR/false_right", "true || false", V("true")),
    ("OR/short_circuit_type_left", "true || 32", V("true")),
    ("OR/short_circuit_type_right", "'horses' || true", V("true")),
    (
        "OR/short_circuit_error_left",
        "true || (2 / 0 > 3 ? false : true)",
        V("true"),
    ),
    (
        "OR/short_circuit_error_right",
        "(2 / 0 > 3 ? false : true) || true",
        V("true"),
    ),
    ("OR/error_right", "false || 1/0 != 0", Error),
    ("OR/error_left", "1/0 != 0 || false", Error),
    ("OR/no_overload", "'less filling' || 'tastes great'", Error),
    ("NOT/not_true", "!true", V("false")),
    ("NOT/not_false", "!false", V("true")),
    // integer_math.textproto
    ("int64_math/add_positive_negative", "42 + (-2)", V("40")),
    ("int64_math/sub_negative_negative", "-42 - (-2)", V("-40")),
    (
        "int64_math/multiply_negative_negative",
        "-42 * (-2)",
        V("84"),
    ),
    ("int64_math/devide_positive_negative", "-42 / 2", V("-21")),
    ("int64_math/mod_positive_negative", "42 % (-5)", V("2")),
    ("int64_math/mod_negative_negative", "-42 % (-5)", V("-2")),
    ("int64_math/negtive", "-(42)", V("-42")),
    ("int64_math/mod_zero", "42 % 0", Error),
    ("int64_math/double_negtive", "-(-42)", V("42")),
    ("int64_math/devide_zero", "15 / 0", Error),
    (
        "int64_math/int64_overflow_positive",
        "9223372036854775807 + 1",
        Error,
    ),
    (
        "int64_math/int64_overflow_negative",
        "-9223372036854775808 - 1",
        Error,
    ),
    (
        "int64_math/int64_overflow_mul",
        "9223372036854775807 * 2",
        Error,
    ),
    (
        "int64_math/int64_overflow_div",
        "-9223372036854775808 / -1",
        Error,
    ),
    (
        "int64_math/int64_overflow_neg",
        "-(-9223372036854775808)",
        Error,
    ),
    ("uint64_math/add", "42u + 2u", V("44u")),
    ("uint64_math/sub", "42u - 2u", V("40u")),
    ("uint64_math/mod", "42u % 5u", V("2u")),
    ("uint64_math/negtive_no_overload", "-(5u)", Error),
    ("uint64_math/mod_zero", "42u % 0u", Error),
    ("uint64_math/uint64_overflow_negative", "0u - 1u", Error),
    (
        "uint64_math/uint64_overflow_positive",
        "18446744073709551615u + 1u",
        Error,
    ),
    ("int_uint/no_mixed_arithmetic", "1 + 1u", Error),
    // fp_math.textproto
    ("fp_math/add_positive_positive", "4.25 + 15.25", V("19.5")),
    ("fp_math/divide_zero", "15.75 / 0.0", V("1.0 / 0.0")),
    ("fp_math/no_mixed_arithmetic", "1.5 + 1", Error),
    ("fp_math/mod_no_overload", "47.5 % 5.5", Error),
    // comparisons.textproto
    ("eq_literal/eq_int", "1 == 1", V("true")),
    ("eq_literal/not_eq_int", "-1 == 1", V("false")),
    ("eq_literal/eq_uint", "2u == 2u", V("true")),
    ("eq_literal/eq_double", "1.0 == 1.0e+0", V("true")),
    ("eq_literal/eq_string", "'' == \"\"", V("true")),
    (
        "eq_literal/not_eq_string_case",
        "'abc' == 'ABC'",
        V("false"),
    ),
    (
        "eq_literal/eq_string_unicode",
        "'ίσος' == 'ίσος'",
        V("true"),
    ),
    ("eq_literal/eq_null", "null == null", V("true")),
    ("eq_literal/eq_bool", "true == true", V("true")),
    (
        "eq_literal/eq_list_numbers",
        "[1, 2, 3] == [1, 2, 3]",
        V("true"),
    ),
    (
        "eq_literal/not_eq_list_order",
        "[1, 2, 3] == [1, 3, 2]",
        V("false"),
    ),
    (
        "eq_literal/eq_map_double_value",
        "{'k':'v', 1:1} == {'k':'v', 1:1.0}",
        V("true"),
    ),
    (
        "eq_literal/not_eq_map_value",
        "{'k':'v'} == {'k':'V'}",
        V("false"),
    ),
    (
        "eq_literal/eq_map_order",
        "{'k':'v', 'k1':'v1'} == {'k1':'v1', 'k':'v'}",
        V("true"),
    ),
    ("eq_literal/eq_mixed_types", "1.0 == 1", V("true")),
    (
        "eq_literal/eq_list_elem_mixed_types",
        "[1] == [1.0]",
        V("true"),
    ),
    (
        "eq_literal/not_eq_mixed_types_error",
        "'1' == 1",
        V("false"),
    ),
    ("eq_literal/eq_int_uint", "1 == 1u", V("true")),
    (
        "eq_literal/not_eq_int_uint",
        "-1 == 18446744073709551615u",
        V("false"),
    ),
    ("eq_literal/eq_double_nan", "0.0/0.0 == 0.0/0.0", V("false")),
    ("ne_literal/ne_double_nan", "0.0/0.0 != 0.0/0.0", V("true")),
    ("lt_literal/lt_int", "-1 < 0", V("true")),
    ("lt_literal/lt_uint", "0u < 1u", V("true")),
    ("lt_literal/lt_double", "1.0 < 1.0000001", V("true")),
    ("lt_literal/lt_string", "'a' < 'b'", V("true")),
    ("lt_literal/lt_string_empty", "'' < 'a'", V("true")),
    ("lt_literal/lt_string_unicode", "'α' < 'β'", V("true")),
    ("lt_literal/lt_bool_false_first", "false < true", V("true")),
    ("lt_literal/not_lt_int_uint", "2 < 1u", V("false")),
    ("lt_literal/lt_int_double", "1 < 1.5", V("true")),
    ("lt_literal/lt_uint_double", "1u < 1.5", V("true")),
    ("lt_literal/lt_mixed_types_error", "'foo' < 1024", Error),
    ("lt_literal/lt_null_error", "null < null", Error),
    ("lt_literal/lt_list_error", "[1] < [2]", Error),
    (
        "lt_literal/not_lt_dyn_int_big_lossy_double",
        "9223372036854775807 < 9223372036854775808.0",
        V("true"),
    ),
    ("gt_literal/gt_int_double", "2 > 1.5", V("true")),
    ("gte_literal/gte_int_double", "2 >= 2.0", V("true")),
    ("lte_literal/lte_uint_int", "1u <= 1", V("true")),
    (
        "in_list_literal/elem_in_list",
        "'elem' in ['elem', 'elemA', 'elemB']",
        V("true"),
    ),
    (
        "in_list_literal/elem_not_in_list",
        "'not' in ['elem1', 'elem2', 'elem3']",
        V("false"),
    ),
    (
        "in_list_literal/elem_in_empty_list",
        "'empty' in []",
        V("false"),
    ),
    (
        "in_list_literal/elem_in_mixed_type_list",
        "'elem' in [1, 'elem', 2]",
        V("true"),
    ),
    (
        "in_list_literal/elem_in_mixed_type_list_cross_type",
        "1.0 in [1u, 'elem']",
        V("true"),
    ),
    (
        "in_map_literal/key_in_map",
        "'key' in {'key':'1', 'other':'2'}",
        V("true"),
    ),
    (
        "in_map_literal/key_not_in_map",
        "'key' in {'lock':1}",
        V("false"),
    ),
    (
        "in_map_literal/key_in_mixed_key_type_map",
        "'key' in {3:3.0, 'key':2u}",
        V("true"),
    ),
    (
        "in_map_literal/key_in_mixed_key_type_map_error",
        "{3:3.0, 'key':2u} in {'key':1}",
        Error,
    ),
    (
        "in_map_literal/int_in_map_uint_key",
        "1 in {1u: 'a'}",
        V("true"),
    ),
    // string.textproto
    ("size/one_unicode", "size('ÿ')", V("1")),
    ("size/unicode", "size('πέντε')", V("5")),
    (
        "starts_with/basic_true",
        "'foobar'.startsWith('foo')",
        V("true"),
    ),
    (
        "starts_with/empty_target",
        "''.startsWith('foo')",
        V("false"),
    ),
    (
        "starts_with/empty_arg",
        "'foobar'.startsWith('')",
        V("true"),
    ),
    (
        "starts_with/unicode",
        "'завтра'.startsWith('за')",
        V("true"),
    ),
    (
        "ends_with/basic_true",
        "'foobar'.endsWith('bar')",
        V("true"),
    ),
    ("ends_with/unicode_smp", "'forté'.endsWith('té')", V("true")),
    ("matches/basic", "'hubba'.matches('ubb')", V("true")),
    ("matches/empty_target", "''.matches('foo|bar')", V("false")),
    ("matches/unicode", "'mañana'.matches('a+ñ+a+')", V("true")),
    ("matches/global", "matches('abc', '^a.c$')", V("true")),
    ("contains/basic", "'hubba'.contains('ubb')", V("true")),
    (
        "contains/empty_target",
        "''.contains('something')",
        V("false"),
    ),
    ("concatenation/concat_true", "'he' + 'llo'", V("'hello'")),
    ("size/no_overload", "size(1)", Error),
    // lists.textproto
    (
        "concatenation/list",
        "[0, 1, 2] + [3, 4, 5] == [0, 1, 2, 3, 4, 5]",
        V("true"),
    ),
    ("index/zero_based", "[7, 8, 9][0]", V("7")),
    ("index/singleton", "['foo'][0]", V("'foo'")),
    ("index/middle", "[0, 1, 1, 2, 3, 5, 8, 13][4]", V("3")),
    ("index/out_of_bounds", "[1, 2, 3][3]", Error),
    ("index/negative", "[1, 2, 3][-1]", Error),
    ("size/list_literal", "size([1, 2, 3])", V("3")),
    ("size/list_empty", "size([])", V("0")),
    // fields.textproto (maps)
    ("map_fields/map_key_int64", "{0:1,2:2,5:true}[5]", V("true")),
    (
        "map_fields/map_key_uint64",
        "{0u:1u,2u:'happy',5u:3u}[2u]",
        V("'happy'"),
    ),
    (
        "map_fields/map_key_string",
        "{'name':100}['name']",
        V("100"),
    ),
    ("map_fields/map_key_bool", "{true:5}[true]", V("5")),
    (
        "map_fields/map_field_access",
        "{'name': 100}.name",
        V("100"),
    ),
    ("map_fields/map_no_such_key", "{0:1,2:2,5:3}[1]", Error),
    (
        "map_fields/map_field_select_no_such_key",
        "{'holiday':'none'}.season",
        Error,
    ),
    ("map_fields/map_value_null", "{true:null}[true]", V("null")),
    (
        "map_fields/map_key_mixed_numbers_double_key",
        "{1u: 1.0, 2: 2.0}[2.0]",
        V("2.0"),
    ),
    ("map_fields/nested_map", "{'a': {'b': 'c'}}.a.b", V("'c'")),
    ("has/map_has_key", "has({'a': 1, 'b': 2}.a)", V("true")),
    ("has/map_no_has_key", "has({'a': 1, 'b': 2}.c)", V("false")),
    ("has/map_value_null", "has({'a': null}.a)", V("true")),
    ("has/map_nested_error", "has({'a': 1}.a.b)", Error),
    ("size/map_literal", "size({'a': 1, 'b': 2})", V("2")),
];

#[test]
fn applicable_conformance_cases() {
    let request = attrs(&[]);
    for (name, expr, expect) in CASES {
        let (source, want) = match expect {
            V(value) => (format!("({expr}) == ({value})"), Some(true)),
            Error => (format!("({expr}) == null || ({expr}) != null"), None),
        };
        assert!(compile(&source).is_ok(), "{name}: {source} refused");
        assert_eq!(eval(&source, &request, None), want, "{name}: {source}");
    }
}

// The kinds of validation rule the commands share: number ranges, choices, paths, option combinations, devices.
using System.CommandLine;
using System.Globalization;
using System.Numerics;
using L2L.Backends;

namespace L2L.Cli.Validation;

/// <summary>Builders for <see cref="Rule"/>s. Every message names the option as the user typed it.</summary>
public static class Rules
{
    /// <summary>The option's name as typed (its alias), or its declared name when it was not typed.</summary>
    public static string Typed(ParseResult parse, Option option)
    {
        var typed = parse.GetResult(option)?.IdentifierToken?.Value;
        return typed is not null && typed.StartsWith('-') ? typed : option.Name;
    }

    /// <summary>Whether the user typed the option (as opposed to its default applying).</summary>
    public static bool Given(ParseResult parse, Option option) => parse.GetResult(option) is { Implicit: false };

    private static string Shown(ParseResult parse, Option option) =>
        parse.GetResult(option) is { Implicit: false, Tokens.Count: > 0 } r ? $"{Typed(parse, option)} {r.Tokens[^1].Value}" : Typed(parse, option);

    /// <summary>The value must be at least <paramref name="min"/>.</summary>
    public static Rule AtLeast<T>(Option<T> option, T min) where T : struct, INumber<T> =>
        Number(option, v => v >= min, $"of at least {min}");

    /// <summary>The value (when given) must be at least <paramref name="min"/>.</summary>
    public static Rule AtLeast<T>(Option<T?> option, T min) where T : struct, INumber<T> =>
        Number(option, v => v >= min, $"of at least {min}");

    /// <summary>The value (when given) must be greater than zero.</summary>
    public static Rule Positive<T>(Option<T?> option) where T : struct, INumber<T> =>
        Number(option, v => v > T.Zero, "greater than 0");

    /// <summary>The value must be finite and greater than zero.</summary>
    public static Rule Positive(Option<float> option) =>
        Number(option, v => float.IsFinite(v) && v > 0, "greater than 0");

    /// <summary>The value must be finite and not negative.</summary>
    public static Rule NonNegative(Option<float> option) =>
        Number(option, v => float.IsFinite(v) && v >= 0, "of 0 or more");

    /// <summary>The value must lie in [<paramref name="min"/>, <paramref name="maxExclusive"/>).</summary>
    public static Rule HalfOpen(Option<float> option, float min, float maxExclusive) =>
        Number(option, v => v >= min && v < maxExclusive, $"in [{min.ToString(CultureInfo.InvariantCulture)}, {maxExclusive.ToString(CultureInfo.InvariantCulture)})");

    private static Rule Number<T>(Option<T> option, Func<T, bool> ok, string range) where T : struct =>
        new($"{option.Name} range", parse => ok(parse.GetValue(option)) ? null
            : $"{Shown(parse, option)} is out of range. Use a value {range}");

    private static Rule Number<T>(Option<T?> option, Func<T, bool> ok, string range) where T : struct =>
        new($"{option.Name} range", parse => parse.GetValue(option) is not { } v || ok(v) ? null
            : $"{Shown(parse, option)} is out of range. Use a value {range}");

    /// <summary>The value must be one of <paramref name="choices"/> (case-insensitive).</summary>
    public static Rule OneOf(Option<string> option, IEnumerable<string> choices, string what)
    {
        var list = choices.ToList();
        return new($"{option.Name} choice", parse => parse.GetValue(option) is { } v && list.Contains(v, StringComparer.OrdinalIgnoreCase) ? null
            : $"{Shown(parse, option)} is not a known {what}. Use one of: {string.Join(", ", list)}");
    }

    /// <summary>The option, when typed, applies only where <paramref name="applies"/> holds; <paramref name="condition"/> says where, e.g. <c>--executor relay</c>.</summary>
    public static Rule AppliesOnlyTo(Option option, Func<ParseResult, bool> applies, string condition) =>
        new($"{option.Name} applies only to {condition}", parse => !Given(parse, option) || applies(parse) ? null
            : $"{Typed(parse, option)} applies only to {condition}, so it would be ignored here. Remove it, or use {condition}");

    /// <summary>The option, when typed, needs <paramref name="other"/> as well.</summary>
    public static Rule Requires(Option option, Option other, string why) =>
        new($"{option.Name} requires {other.Name}", parse => !Given(parse, option) || Given(parse, other) ? null
            : $"{Typed(parse, option)} needs {other.Name} ({why}). Add {other.Name}, or remove {Typed(parse, option)}");

    /// <summary>At most one of the two options may be typed.</summary>
    public static Rule Exclusive(Option a, Option b, string hint) =>
        new($"{a.Name} excludes {b.Name}", parse => !(Given(parse, a) && Given(parse, b)) ? null
            : $"{Typed(parse, a)} and {Typed(parse, b)} cannot be used together. {hint}");

    /// <summary>A rule of its own kind.</summary>
    public static Rule Custom(string name, Func<ParseResult, string?> check) => new(name, check);

    /// <summary>The option (when given) must name an existing file that can be opened for reading; <paramref name="expected"/> says what it should be.</summary>
    public static Rule InputFile(Option<string?> option, string expected) =>
        new($"{option.Name} input file", parse => parse.GetValue(option) is not { } path ? null
            : PathProbe.ReadableFile(path) is { } problem ? $"{Typed(parse, option)} '{path}' {problem}. {Capital(expected)}" : null);

    /// <summary>The option (when given) must name an existing directory that can be listed; <paramref name="expected"/> says what it should be.</summary>
    public static Rule InputDirectory(Option<string?> option, string expected) =>
        new($"{option.Name} input directory", parse => parse.GetValue(option) is not { } path ? null
            : PathProbe.ReadableDirectory(path) is { } problem ? $"{Typed(parse, option)} '{path}' {problem}. {Capital(expected)}" : null);

    /// <summary>The option (when given) must name a readable directory holding a checkpoint's config and model files.</summary>
    public static Rule CheckpointInput(Option<string?> option, string expected) =>
        new($"{option.Name} checkpoint", parse =>
        {
            if (parse.GetValue(option) is not { } path) return null;
            if (PathProbe.ReadableDirectory(path) is { } problem) return $"{Typed(parse, option)} '{path}' {problem}. {Capital(expected)}";
            var missing = new[] { L2L.Model.Checkpoint.ConfigFile, L2L.Model.Checkpoint.ModelFile }.FirstOrDefault(f => !File.Exists(Path.Combine(path, f)));
            return missing is null ? null : $"{Typed(parse, option)} '{path}' has no {missing}, so it is not a checkpoint. {Capital(expected)}";
        });

    /// <summary>The option (when given) must name a file that can be created or written (tried, then undone), ending in <paramref name="extension"/> when given.</summary>
    public static Rule OutputFile(Option<string?> option, string what, string? extension = null) =>
        new($"{option.Name} output file", parse =>
        {
            if (parse.GetValue(option) is not { } path) return null;
            if (Directory.Exists(path)) return $"{Typed(parse, option)} '{path}' is a directory. Give a file path for {what}";
            if (extension is not null && !path.EndsWith(extension, StringComparison.OrdinalIgnoreCase))
                return $"{Typed(parse, option)} '{path}' does not end in {extension}, but {what} is written as {extension[1..].ToUpperInvariant()}. " +
                    $"Use a name ending in {extension}, e.g. '{Path.ChangeExtension(path, extension)}'";
            return PathProbe.WritableFile(path) is { } problem ? $"{Typed(parse, option)} '{path}' {problem}. Give a file path for {what} that can be written" : null;
        });

    /// <summary>
    /// The option (when given) must name a checkpoint directory that a save can create or replace:
    /// not a file, not a directory holding anything but a checkpoint, in a parent where directories
    /// can be created (tried, then undone).
    /// </summary>
    public static Rule CheckpointOutput(Option<string?> option) =>
        new($"{option.Name} checkpoint directory", parse => parse.GetValue(option) is not { } path ? null
            : PathProbe.CheckpointTarget(path) is { } problem ? $"{Typed(parse, option)} '{path}' {problem}" : null);

    /// <summary>The device option and the <see cref="DeviceSpec.EnvironmentVariable"/> fallback must parse.</summary>
    public static Rule Device(Option<string?> option) =>
        new($"{option.Name} device", parse =>
        {
            try
            {
                DeviceSpec.Resolve(parse.GetValue(option), Typed(parse, option));
                return null;
            }
            catch (FormatException e)
            {
                return e.Message.TrimEnd('.');
            }
        });

    private static string Capital(string text) => text.Length == 0 ? text : char.ToUpperInvariant(text[0]) + text[1..];
}

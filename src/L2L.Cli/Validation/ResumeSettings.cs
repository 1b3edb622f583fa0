// Strict resume: settings a checkpoint recorded are inherited when not typed, and a typed change needs --override NAME.
using System.CommandLine;
using L2L.Model;

namespace L2L.Cli.Validation;

/// <summary>
/// Ties a command's options to the run settings a checkpoint recorded (see <c>L2L.Training.RunSettings</c>).
/// On resume, an option the user did not type takes the checkpoint's value; one typed with a
/// different value is an error unless <c>--override NAME</c> names it. Older checkpoints that did
/// not record a setting leave it to the option.
/// </summary>
public sealed class ResumeSettings
{
    private readonly ParseResult _parse;
    private readonly IReadOnlyDictionary<string, string>? _recorded;
    private readonly IReadOnlyList<(string Key, Option Option)> _map;
    private readonly HashSet<string> _overrides;

    /// <summary>
    /// Creates the check for a run resumed from <paramref name="recorded"/> (null: a fresh run, nothing is checked).
    /// <paramref name="map"/> pairs each recorded key with its option; <paramref name="overrides"/> are the
    /// names given to --override (with or without dashes).
    /// </summary>
    public ResumeSettings(ParseResult parse, IReadOnlyDictionary<string, string>? recorded, IReadOnlyList<(string Key, Option Option)> map, IEnumerable<string> overrides)
    {
        _parse = parse;
        _recorded = recorded;
        _map = map;
        _overrides = overrides.Select(Normalize).ToHashSet(StringComparer.OrdinalIgnoreCase);
    }

    /// <summary>The names --override accepts.</summary>
    public static IEnumerable<string> Names(IEnumerable<(string Key, Option Option)> map) => map.Select(m => m.Option.Name.TrimStart('-'));

    /// <summary>A rule: every --override name must be one of <paramref name="map"/>'s options.</summary>
    public static Rule OverrideNames(Option<string[]> option, IReadOnlyList<(string Key, Option Option)> map) =>
        Rules.Custom($"{option.Name} names", parse =>
        {
            var known = Names(map).ToList();
            var bad = (parse.GetValue(option) ?? []).FirstOrDefault(n => !known.Contains(Normalize(n), StringComparer.OrdinalIgnoreCase));
            return bad is null ? null
                : $"{Rules.Typed(parse, option)} '{bad}' is not a setting a checkpoint records. Use one of: {string.Join(", ", known)}";
        });

    private static string Normalize(string name) => name.Trim().TrimStart('-').Replace('_', '-');

    /// <summary>The option's value, or the checkpoint's when resuming and the option was not typed.</summary>
    public T Value<T>(Option<T> option, Func<string, T> fromText)
    {
        var key = _map.First(m => ReferenceEquals(m.Option, option)).Key;
        return _recorded is not null && !Rules.Given(_parse, option) && _recorded.TryGetValue(key, out var text)
            ? fromText(text)
            : _parse.GetValue(option)!;
    }

    /// <summary>
    /// Compares the settings the run will use (<paramref name="now"/>, as RunSettings describes them)
    /// with the recorded ones; <paramref name="ignore"/> names keys that do not matter for this run
    /// (e.g. the step target under a constant schedule). <paramref name="allowed"/> maps keys whose change
    /// is let through without --override to the reason, given in the note. Returns a note per allowed or overridden change.
    /// </summary>
    /// <exception cref="CliException">A typed setting differs and is neither allowed nor overridden.</exception>
    public IReadOnlyList<string> Check(IReadOnlyDictionary<string, string> now, string checkpoint, Func<string, bool> ignore,
        IReadOnlyDictionary<string, string>? allowed = null)
    {
        var notes = new List<string>();
        if (_recorded is null) return notes;
        foreach (var (key, option) in _map)
        {
            if (!_recorded.TryGetValue(key, out var was) || !now.TryGetValue(key, out var value) || was == value || ignore(key)) continue;
            var name = option.Name.TrimStart('-');
            if (allowed is not null && allowed.TryGetValue(key, out var why))
            {
                notes.Add($"{option.Name} changed from {was} (in the checkpoint) to {value}; {why}");
                continue;
            }
            if (_overrides.Contains(name))
            {
                notes.Add($"{option.Name} changed from {was} (in the checkpoint) to {value}, as --override {name} allows");
                continue;
            }
            throw new CliException(
                $"{Rules.Typed(_parse, option)} {value} differs from the {was} that checkpoint '{checkpoint}' recorded, and changing it changes the training trajectory. " +
                $"Drop {option.Name} to continue with {was}, or add --override {name} to change it");
        }
        return notes;
    }

    /// <summary>The checkpoint's training state file, for messages.</summary>
    public static string StateFile(string dir) => Path.Combine(dir, Checkpoint.StateFile);
}

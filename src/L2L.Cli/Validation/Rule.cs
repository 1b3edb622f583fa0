// A validation rule over a parsed command line, and the table of rules a command checks before it starts.
using System.Collections;
using System.CommandLine;

namespace L2L.Cli.Validation;

/// <summary>One named check: returns null when the command line satisfies it, else the error line.</summary>
/// <param name="Name">What the rule is about (for tests and listings), e.g. <c>--beta1 range</c>.</param>
/// <param name="Check">The check.</param>
public sealed record Rule(string Name, Func<ParseResult, string?> Check);

/// <summary>
/// The rules a command checks, in order, before it loads a model, opens data or creates a backend.
/// New options join by adding rules (see <see cref="Rules"/> for the kinds: ranges, paths, choices,
/// "applies only to", requirements).
/// </summary>
public sealed class RuleTable : IEnumerable<Rule>
{
    private readonly List<Rule> _rules = [];

    /// <summary>Adds a rule.</summary>
    public void Add(Rule rule) => _rules.Add(rule);

    /// <summary>Adds a group of rules that belong together (e.g. one option family's), in order.</summary>
    public void Add(IEnumerable<Rule> rules) => _rules.AddRange(rules);

    /// <summary>Throws a <see cref="CliException"/> with the first failing rule's message.</summary>
    public void Check(ParseResult parse)
    {
        foreach (var rule in _rules)
            if (rule.Check(parse) is { } problem)
                throw new CliException(problem);
    }

    /// <inheritdoc/>
    public IEnumerator<Rule> GetEnumerator() => _rules.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}

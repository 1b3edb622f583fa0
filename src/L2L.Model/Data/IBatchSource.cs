// What the training loop and the evaluator read a step's minibatch from, whatever the objective.
namespace L2L.Model.Data;

/// <summary>Produces step s's minibatch: (B, T) inputs and targets, <c>-1</c> at targets that are not scored.</summary>
public interface IBatchSource
{
    /// <summary>Sequences per step, B.</summary>
    int Batch { get; }

    /// <summary>Tokens per sequence, T.</summary>
    int SeqLen { get; }

    /// <summary>Fills the (B, T) row-major inputs and targets of 0-based step <paramref name="step"/>.</summary>
    void Fill(long step, Span<int> inputs, Span<int> targets);
}

// AdamW on the host, as torch.optim.AdamW computes it: decoupled decay, lerp'd first moment, eps after the sqrt.
using System.Numerics;
using System.Runtime.CompilerServices;

namespace L2L.Training.Optim;

internal sealed unsafe class AdamWOptimizer(OptimizerSettings settings, int threads) : HostOptimizerBase(settings, threads), ISliceKernel<AdamWOptimizer.Constants>
{
    public override OptimizerKind Kind => OptimizerKind.AdamW;

    public override int StateFloatsPerParam => 2;

    /// <summary>Per-step scalars, derived in double and rounded once to float, as PyTorch does with Python floats.</summary>
    internal readonly struct Constants
    {
        public readonly float DecayFactor;
        public readonly float OneMinusBeta1;
        public readonly float Beta2;
        public readonly float OneMinusBeta2;
        public readonly float Bc2Sqrt;
        public readonly float Epsilon;
        public readonly float NegStepSize;

        public Constants(OptimizerSettings s, int step, float lr, bool decay)
        {
            // Without decay the factor is exactly 1, and p * 1 == p bit for bit.
            DecayFactor = decay ? (float)(1.0 - (double)lr * s.WeightDecay) : 1f;
            OneMinusBeta1 = (float)(1.0 - s.Beta1);
            Beta2 = s.Beta2;
            OneMinusBeta2 = (float)(1.0 - s.Beta2);
            Bc2Sqrt = (float)Math.Sqrt(BiasCorrection(s.Beta2, step));
            Epsilon = s.Epsilon;
            NegStepSize = (float)(-(lr / BiasCorrection(s.Beta1, step)));
        }
    }

    protected override void Update(in Slice slice, int step, float lr, bool decay)
    {
        var c = new Constants(Settings, step, lr, decay);
        if (!UseHelpers(slice.Length))
        {
            Run(slice, c, 0, slice.Length);
            return;
        }
        var job = RentJob<Job>();
        job.Slice = slice;
        job.C = c;
        job.RunAndRelease(ChunkCount(slice.Length), Threads);
    }

    internal static void Run(in Slice s, in Constants c, nint start, nint end) => SliceDispatch.Run<AdamWOptimizer, Constants>(s, c, start, end);

    /// <inheritdoc/>
    public static void Kernel<TGrad, TCopy>(in Slice s, in Constants c, nint start, nint end) where TGrad : struct, IGradReader where TCopy : struct, ICopyWriter
    {
        // Pointers in locals: a store through one of them could alias the struct, which would force reloads.
        float* param = s.Param, mom = s.M, vel = s.V;
        var half = s.Half;
        var grad = s.Grad;
        var factor = s.GradFactor;
        var i = start;
        if (Vector.IsHardwareAccelerated)
        {
            var w = Vector<float>.Count;
            var factorV = new Vector<float>(factor);
            var decayFactor = new Vector<float>(c.DecayFactor);
            var oneMinusBeta1 = new Vector<float>(c.OneMinusBeta1);
            var beta2 = new Vector<float>(c.Beta2);
            var oneMinusBeta2 = new Vector<float>(c.OneMinusBeta2);
            var bc2Sqrt = new Vector<float>(c.Bc2Sqrt);
            var eps = new Vector<float>(c.Epsilon);
            var negStepSize = new Vector<float>(c.NegStepSize);
            for (; i <= end - 2 * w; i += 2 * w)
            {
                TGrad.Load(grad, i, factorV, out var g0, out var g1);
                var p0 = Vector.Load(param + i);
                var p1 = Vector.Load(param + i + w);
                var m0 = Vector.Load(mom + i);
                var m1 = Vector.Load(mom + i + w);
                var v0 = Vector.Load(vel + i);
                var v1 = Vector.Load(vel + i + w);

                p0 = p0 * decayFactor;
                m0 = m0 + oneMinusBeta1 * (g0 - m0);
                v0 = v0 * beta2 + oneMinusBeta2 * g0 * g0;
                p0 = p0 + negStepSize * m0 / (Vector.SquareRoot(v0) / bc2Sqrt + eps);

                p1 = p1 * decayFactor;
                m1 = m1 + oneMinusBeta1 * (g1 - m1);
                v1 = v1 * beta2 + oneMinusBeta2 * g1 * g1;
                p1 = p1 + negStepSize * m1 / (Vector.SquareRoot(v1) / bc2Sqrt + eps);

                p0.Store(param + i);
                p1.Store(param + i + w);
                m0.Store(mom + i);
                m1.Store(mom + i + w);
                v0.Store(vel + i);
                v1.Store(vel + i + w);
                if (half != null) TCopy.Store(half + i, p0, p1);
            }
        }
        for (; i < end; i++)
        {
            var g = TGrad.Load(grad, i, factor);
            var p = param[i];
            var m = mom[i];
            var v = vel[i];

            p = p * c.DecayFactor;
            m = m + c.OneMinusBeta1 * (g - m);
            v = v * c.Beta2 + c.OneMinusBeta2 * g * g;
            p = p + c.NegStepSize * m / (MathF.Sqrt(v) / c.Bc2Sqrt + c.Epsilon);

            param[i] = p;
            mom[i] = m;
            vel[i] = v;
            if (half != null) half[i] = TCopy.Bits(p);
        }
    }

    private sealed class Job : ChunkJob
    {
        public Slice Slice;
        public Constants C;

        protected override void RunChunk(int index)
        {
            var start = (nint)index * ChunkSize;
            Run(Slice, C, start, Math.Min(start + ChunkSize, Slice.Length));
        }
    }
}
